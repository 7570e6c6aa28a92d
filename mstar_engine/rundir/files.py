"""Files of a run directory: atomic text writes, runs and stages set aside (never deleted),
temporary files of interrupted writes cleaned, and outputs kept away from a run's own files."""
from __future__ import annotations

import time
from pathlib import Path

from mstar_engine.util.atomic import atomic_write

#: Files of a run directory that only mstar run/distill write (``mstar sample --out`` may not).
RUN_FILES = ("spec.toml", "spec.resolved.toml", "plan.txt", "metrics.jsonl", "distill.jsonl", "eval.jsonl",
             "results.json", "results.txt", "comparison.txt", "loss.svg", ".lock")
MARKER = "spec.resolved.toml"  # a folder holding it is a run directory


class OutputError(ValueError):
    """An output path that would overwrite a run's own files or cannot be written."""


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a crash leaves the old file or the new one)."""
    atomic_write(Path(path), lambda fh: fh.write(text.encode()), shared=True)


def set_aside(path: Path, into: Path | None = None) -> Path:
    """Rename ``path`` (a run directory, a stage's checkpoint folder) to a free name
    ``<name>.replaced-<date>-<time>`` beside it (or in the folder ``into``) and return it: what it
    held stays loadable there."""
    path = Path(path)
    folder = Path(into) if into is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / f"{path.name}.replaced-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{path.name}.replaced-{stamp}-{n}"
    path.rename(target)
    return target


def clean_temporary(run_dir: Path) -> list[Path]:
    """Delete the temporary files of writes that a kill interrupted (``.<name>.<random>.tmp``, as
    :func:`~mstar_engine.util.atomic.atomic_write` names them) anywhere in ``run_dir``; call only while
    holding the run's lock. Returns the files deleted."""
    removed = []
    for tmp in Path(run_dir).rglob(".*.tmp*"):
        if tmp.is_file() and (tmp.name.endswith(".tmp") or ".tmp." in tmp.name):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def run_directory_of(path: Path) -> Path | None:
    """The run directory holding ``path`` (itself or the nearest folder above it with a
    ``spec.resolved.toml``), or None."""
    path = Path(path).absolute()
    for folder in path.parents:
        if (folder / MARKER).is_file():
            return folder
    return None


def check_output(path: str | Path) -> Path:
    """Refuse an output file (samples, grids) that would replace a run's own files: anything in a
    run's ``checkpoints/`` folder, or one of :data:`RUN_FILES`; and say clearly when the folder
    cannot hold it (a file in the way)."""
    path = Path(path)
    run = run_directory_of(path)
    if run is not None:
        inside = path.absolute().relative_to(run)
        if inside.parts[0] == "checkpoints" or (len(inside.parts) == 1 and inside.name in RUN_FILES):
            raise OutputError(f"{path} is a file of the run directory {run} ({inside}); writing there would "
                              f"replace the run's own data. Write samples under {run / 'samples'} or elsewhere")
    for folder in (path.absolute(), *path.absolute().parents):
        if folder.exists():
            if not folder.is_dir() and folder != path.absolute():
                raise OutputError(f"cannot write {path}: {folder} is a file, not a folder")
            break
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    return path
