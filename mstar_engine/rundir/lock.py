"""One lock per run directory, held by every command that writes to it (``mstar run``, ``mstar
distill``) for the whole command.

The lock is an advisory ``flock`` on ``RUN/.lock``: the kernel releases it when its process ends,
however it ends (SIGKILL, out of memory), so a stale lock of a dead process is simply taken over.
The file records the holder (pid, host, command, start time) for the error a second writer gets.
The file itself is never deleted (deleting a locked file would let two processes lock two files).
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not protected there
    fcntl = None

NAME = ".lock"


class RunLocked(RuntimeError):
    """Another process is writing to the run directory."""


def acquire(run_dir: Path, command: str) -> int:
    """Take the lock of ``run_dir``; the file descriptor that holds it (see :func:`release`)."""
    path = Path(run_dir) / NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _holder(fd)
        os.close(fd)
        raise RunLocked(f"{run_dir} is in use by {holder}; wait for it to finish (or stop it) before running "
                        "another command that writes to this run directory, or give this one another "
                        "experiment.name") from None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    return fd


def release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
    except OSError:
        pass
    os.close(fd)  # closing the descriptor releases the flock


def _holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        record = {}
    if not record:
        return "another process"
    return (f"mstar {record.get('command', '?')} (pid {record.get('pid', '?')} on host {record.get('host', '?')}, "
            f"since {record.get('since', '?')})")
