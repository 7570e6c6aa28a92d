"""Checkpoints: atomic writes (temporary file, fsync, rename) and a ``latest`` pointer.

A crash at any moment leaves the previous checkpoint and pointer intact: the new file only gets
its final name once it is complete, and ``latest`` is replaced the same way afterwards.
Checkpoints hold tensors, numbers and strings only, so they load with ``weights_only=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mstar_engine.atomic import atomic_write

LATEST = "latest"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which file and why."""


def save_checkpoint(directory: str | Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as ``step-NNNNNNNN.pt`` and point ``latest`` at it; keep the newest ``keep``
    (0: every one)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.pt"
    try:
        atomic_write(path, lambda fh: torch.save(state, fh))
        atomic_write(directory / LATEST, lambda fh: fh.write(path.name.encode() + b"\n"))
    except OSError as exc:
        previous = latest_checkpoint(directory)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}; {kept}. Free space (or fix "
                              "the folder's permissions) and run again with --resume auto") from None
    for old in sorted(directory.glob("step-*.pt"))[:-keep] if keep else ():
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The file ``latest`` points to, or None when there is no checkpoint yet."""
    pointer = Path(directory) / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    path = Path(directory) / name
    if not name or not path.is_file():
        raise CheckpointError(f"{pointer} points to {name!r}, which does not exist; "
                              "restore the file or delete the pointer to start afresh")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear message
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None


def differing_keys(expected: dict, stored: dict) -> list[str]:
    """The fingerprint keys whose values differ between a run's settings and a checkpoint's."""
    return sorted(k for k in set(expected) | set(stored) if expected.get(k) != stored.get(k))
