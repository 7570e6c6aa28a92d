"""Atomic file writes: a temporary file in the same folder, flushed and fsynced, then renamed over
the target. A crash at any moment leaves either the old file or the new one, never a partial one."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, suffix: str = ".tmp",
                 shared: bool = False) -> None:
    """Call ``write(fh)`` on a temporary file and rename it to ``path``. ``shared=True`` gives the
    file the usual umask permissions (mkstemp creates it readable by its owner only)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        if shared:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
