"""Every schedule test writes its on-disk cache into one temporary folder for the session."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def schedule_cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mstar-cache")
    old = os.environ.get("MSTAR_CACHE_DIR")
    os.environ["MSTAR_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MSTAR_CACHE_DIR", None)
    else:
        os.environ["MSTAR_CACHE_DIR"] = old
