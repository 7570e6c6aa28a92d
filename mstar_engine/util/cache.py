"""On-disk cache of results that are expensive to build: schedules (``snr-matched``,
``beta-cosine``, ``categorical-d3pm``) and Inception statistics of image sets (FID references and
noise floors).

Location: ``$MSTAR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/mstar``, else ``~/.cache/mstar``;
each kind of result has its folder there (``schedules/``, ``inception/``), one ``.npz`` per key.
The key names everything the result depends on plus :data:`VERSION` (and the caller's own version
entries), bumped whenever an algorithm changes so that stale entries are never read.

Writes are atomic: the arrays go to a temporary file in the same folder, which is then renamed
over the target with ``os.replace``, so concurrent builders (several ranks, several runs) never
see a half-written file; the last writer wins with identical content. A file that cannot be
read is treated as a miss and rebuilt. :data:`STATS` counts hits, misses and writes (tests use it).
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np

from mstar_engine.util.atomic import atomic_write

VERSION = 1
STATS: Counter = Counter()


def cache_dir(folder: str = "schedules") -> Path:
    """The cache folder of one kind of result (not created here)."""
    root = os.environ.get("MSTAR_CACHE_DIR")
    if root:
        return Path(root).expanduser() / folder
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mstar" / folder


def cache_path(key: dict, folder: str = "schedules") -> Path:
    """File of a key: a readable prefix plus a hash of the full key."""
    items = sorted({**key, "version": VERSION}.items())
    text = ";".join(f"{k}={v!r}" for k, v in items)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    prefix = "-".join(str(key.get(k)) for k in ("schedule", "family", "steps", "what") if k in key)
    prefix = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in prefix)
    return cache_dir(folder) / f"{prefix}-{digest}.npz"


def load(key: dict, folder: str = "schedules") -> dict[str, np.ndarray] | None:
    path = cache_path(key, folder)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.array(data[name], dtype=_kept(data[name])) for name in data.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def save(key: dict, arrays: dict[str, np.ndarray], folder: str = "schedules") -> Path:
    """Write ``arrays`` atomically (temporary file + os.replace) and return the path."""
    path = cache_path(key, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    atomic_write(path, lambda fh: np.savez(fh, **{k: v.astype(_kept(v)) for k, v in arrays.items()}),
                 suffix=".tmp.npz", shared=True)
    STATS["writes"] += 1
    return path


def _kept(array: np.ndarray) -> type:
    """Arrays are stored and read as float64, except float32 ones (large feature sets), kept as they are."""
    return np.float32 if array.dtype == np.float32 else np.float64


def cached(key: dict, build: Callable[[], dict[str, np.ndarray]], use_cache: bool = True,
           folder: str = "schedules") -> dict[str, np.ndarray]:
    """Return the cached arrays for ``key`` in ``folder``, building and storing them on a miss.

    A cache folder that cannot be written (read-only home, full disk) does not fail the build:
    the result is returned uncached.
    """
    if use_cache:
        hit = load(key, folder)
        if hit is not None:
            STATS["hits"] += 1
            return hit
    STATS["misses"] += 1
    arrays = build()
    if use_cache:
        try:
            save(key, arrays, folder)
        except OSError:
            STATS["write_errors"] += 1
    return arrays
