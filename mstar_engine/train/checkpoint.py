"""Checkpoints: atomic writes (temporary file, fsync, rename), discovery that trusts no single file.

A crash at any moment leaves the previous checkpoint intact: a new file only gets its final name
once it is complete. ``latest`` names the newest file for people and other tools, but nothing here
depends on it: :func:`find_checkpoint` takes the highest-numbered ``step-*.pt`` that loads and
holds finite weights, and names every newer file it skips and why (a torn, empty or overwritten
file, NaN weights). Pruning never deletes the newest checkpoint or one being resumed from.

Checkpoints hold tensors, numbers and strings only, so they load with ``weights_only=True``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from mstar_engine.util.atomic import atomic_write

LATEST = "latest"
PATTERN = re.compile(r"step-(\d+)\.pt")
#: What a checkpoint holds that must be finite (weights; the optimiser's moments follow them).
WEIGHTS = ("model", "ema", "coupling")
class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which file and why."""


def save_checkpoint(directory: str | Path, step: int, state: dict[str, Any], keep: int = 3,
                    protect: Iterable[Path | None] = ()) -> Path:
    """Write ``state`` as ``step-NNNNNNNN.pt`` and point ``latest`` at it; keep the newest ``keep``
    (0: every one) and the files in ``protect`` (the checkpoint a run resumed from)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.pt"
    try:
        atomic_write(path, lambda fh: torch.save(state, fh), shared=True)
        point_latest(path)
    except OSError as exc:
        previous = latest_checkpoint(directory)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}; {kept}. Free space (or fix "
                              "the folder's permissions) and run again with --resume auto") from None
    if keep:
        spared = {path.name, *(Path(p).name for p in protect if p is not None)}
        for old in checkpoint_files(directory)[keep:]:
            if old.name not in spared:
                old.unlink(missing_ok=True)
    return path


def point_latest(path: Path) -> None:
    """Make ``latest`` in ``path``'s folder name ``path`` (a writer repairing a lost or torn
    pointer; readers never need it)."""
    pointer = path.parent / LATEST
    try:
        current = pointer.read_text().strip() if pointer.is_file() else None
    except (OSError, UnicodeDecodeError):
        current = None
    if current != path.name:
        atomic_write(pointer, lambda fh: fh.write(path.name.encode() + b"\n"), shared=True)


def checkpoint_files(directory: str | Path) -> list[Path]:
    """The ``step-*.pt`` files of a checkpoint folder, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := PATTERN.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The highest-numbered checkpoint file (not loaded, not checked), or None when there is none.
    :func:`find_checkpoint` is the one to resume or sample from."""
    return next(iter(checkpoint_files(directory)), None)


def find_checkpoint(directory: str | Path, warn: Callable[[str], None] | None = None, *,
                    set_aside: bool = False) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads and holds finite weights, with its state; None when the
    folder holds none. Each newer file skipped is named through ``warn`` with the reason;
    ``set_aside`` (a writer holding the run's lock) renames them ``*.pt.bad`` so that pruning and
    later runs leave them alone."""
    for path in checkpoint_files(directory):
        try:
            return path, load_checkpoint(path)
        except CheckpointError as exc:
            note = str(exc)
            if set_aside:
                bad = path.with_name(path.name + ".bad")
                path.replace(bad)
                note += f"; renamed {bad.name}"
            if warn is not None:
                warn(f"warning: skipped {note}")
    return None


def load_checkpoint(path: str | Path, finite: bool = True) -> dict[str, Any]:
    """The state stored in ``path``; :class:`CheckpointError` saying why when the file is not a
    complete mstar checkpoint or (``finite``) its weights are not finite."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes; its write never completed)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear message
        raise CheckpointError(f"{path}: not a complete checkpoint (truncated, overwritten or not written by "
                              f"mstar: {_torch_reason(exc)})") from None
    if not isinstance(state, dict) or "step" not in state or "model" not in state:
        raise CheckpointError(f"{path}: not an mstar checkpoint (it holds no 'step' and 'model' entries)")
    if finite and (bad := nonfinite(state)):
        raise CheckpointError(f"{path}: its weights are not finite ({bad}); the training had diverged")
    return state


def nonfinite(state: dict[str, Any]) -> str:
    """The first weight tensor of a checkpoint state holding NaN or infinity, as ``entry.name``
    (empty when every weight is finite)."""
    for entry in WEIGHTS:
        tensors = state.get(entry) or {}
        if not isinstance(tensors, dict):
            continue
        for name, tensor in tensors.items():
            if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f"{entry}.{name}"
    return ""


def differing_keys(expected: dict, stored: dict) -> list[str]:
    """The fingerprint keys whose values differ between a run's settings and a checkpoint's (keys
    the checkpoint holds but the settings no longer name, such as a folder that moved, are not
    compared)."""
    return sorted(k for k in expected if expected[k] != stored.get(k))


def _torch_reason(exc: Exception) -> str:
    """torch's error in one line, without its advice to unpickle (``weights_only=False``), which
    would execute whatever the file holds."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        if "GLOBAL" in text or "global" in text:
            return "it holds Python objects other than tensors, numbers and strings, which are never loaded"
        return "its bytes are not a checkpoint's"
    text = text.splitlines()[0].split(". ")[0].strip(" .") if text else ""
    return text or type(exc).__name__
