"""Every test writes mstar's on-disk cache (schedules, Inception statistics) into one temporary
folder for the session, never into the user's ~/.cache."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def mstar_cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mstar-cache")
    old = os.environ.get("MSTAR_CACHE_DIR")
    os.environ["MSTAR_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MSTAR_CACHE_DIR", None)
    else:
        os.environ["MSTAR_CACHE_DIR"] = old
