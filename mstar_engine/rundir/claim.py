"""What every command that writes to a run directory does first: take its lock, refuse to start
afresh over a trained run unless told to move it aside, and clean what a killed write left."""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from mstar_engine.rundir.files import MARKER, clean_temporary, set_aside
from mstar_engine.rundir.lock import acquire, release
from mstar_engine.train.checkpoint import checkpoint_files


class RunExists(RuntimeError):
    """Starting afresh (``--resume never``) would write over a trained run."""


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run (its resolved spec or any checkpoint)."""
    run_dir = Path(run_dir)
    return (run_dir / MARKER).is_file() or any(
        checkpoint_files(folder) for folder in (run_dir / "checkpoints").glob("*") if folder.is_dir())


@contextmanager
def claim(run_dir: Path, command: str, *, resume: bool = True, overwrite: bool = False,
          also: Iterable[Path] = (), log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of ``run_dir`` (and of the run directories ``also``, its ``[compare]``
    variants) for the block. Starting afresh (``resume`` False) over a directory that holds a run
    raises :class:`RunExists` unless ``overwrite``, which renames it ``RUN.replaced-<date>-<time>``
    (never deletes it). Temporary files of interrupted writes are deleted."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        fd = acquire(run_dir, command)
        stack.callback(lambda: release(fd))
        if holds_run(run_dir) and (overwrite or not resume):
            if not overwrite:
                raise RunExists(f"{run_dir} already holds a run, and --resume never would start afresh over it. "
                                "Give --overwrite to move it aside (renamed RUN.replaced-DATE-TIME, still loadable) "
                                "and start afresh, give the new run another experiment.name, or leave out "
                                "--resume never to continue this one")
            moved = set_aside(run_dir)
            log(f"moved the earlier run to {moved} (it stays loadable there)")
            run_dir.mkdir(parents=True)
            fd_new = acquire(run_dir, command)  # the lock of the new directory, then let go of the old
            stack.pop_all()
            release(fd)
            stack.callback(lambda: release(fd_new))
        for other in also:
            Path(other).mkdir(parents=True, exist_ok=True)
            held = acquire(Path(other), command)
            stack.callback(lambda held=held: release(held))
        removed = clean_temporary(run_dir)
        if removed:
            log(f"removed {len(removed)} temporary file{'s' if len(removed) != 1 else ''} of interrupted writes "
                f"({', '.join(p.name for p in removed[:3])}{', …' if len(removed) > 3 else ''})")
        yield
