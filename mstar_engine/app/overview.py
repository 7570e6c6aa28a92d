"""``mstar runs``: the run directories under a folder at a glance, read from their files (no
checkpoint is loaded): what each trains, how far it got, its distillation stages and its results.

Every run gets its own entry: a part of a run that cannot be read (its spec, a malformed
``results.json``, a damaged ``distill.jsonl``) shows in that run's status, naming the file and line,
and the other runs are listed as usual.
"""
from __future__ import annotations

import time
from pathlib import Path

from mstar_engine.plan import compile_plan
from mstar_engine.rundir.records import RecordError, read_json, read_jsonl
from mstar_engine.spec import SpecError, load_spec
from mstar_engine.train.checkpoint import PATTERN, latest_checkpoint


def run_directories(folder: str | Path) -> list[Path]:
    """Run directories (holding ``spec.resolved.toml``) in ``folder`` and their ``compare/``
    variants, in name order; ``folder`` itself when it is one."""
    folder = Path(folder)
    found = [folder] if (folder / "spec.resolved.toml").is_file() else []
    found += [resolved.parent for resolved in sorted(folder.glob("*/spec.resolved.toml"))]
    out = []
    for run in found:
        out += [run, *sorted(r.parent for r in (run / "compare").glob("*/spec.resolved.toml"))]
    return out


def overview(folder: str | Path, now: float | None = None) -> list[dict]:
    """One entry per run directory: ``run``, ``family``, ``data``, ``coupling``, ``step``,
    ``steps``, ``status``, ``distilled`` (finished stages' evaluation counts), ``results`` (first
    rows of results.json) and ``updated`` (seconds since the last file change). A run whose spec
    cannot be read has only ``run``, ``path`` and ``status``."""
    now = time.time() if now is None else now
    return [_entry(run, Path(folder), now) for run in run_directories(folder)]


def _entry(run: Path, folder: Path, now: float) -> dict:
    name = str(run.relative_to(folder)) if run != folder else run.name
    entry = {"run": name, "path": str(run)}
    try:
        loaded = load_spec(run / "spec.resolved.toml", semantic=False)
        total = compile_plan(loaded, cuda_count=0).stages[0].optimizer_steps  # None: epochs of a size seen at run time
    except SpecError as exc:
        return {**entry, "status": f"unreadable spec: {exc.issues[0] if exc.issues else exc}"}
    spec = loaded.spec
    step = trained_step(run / "checkpoints" / "train")
    unreadable = []  # the parts of the run that cannot be read: each named in the status
    try:
        results = read_json(run / "results.json") if (run / "results.json").is_file() else None
        if results is not None and not (isinstance(results, dict) and isinstance(results.get("results", []), list)):
            raise RecordError(f"{run / 'results.json'}: not an mstar results file (expected a JSON object with a "
                              "list 'results')")
    except RecordError as exc:
        results = None
        unreadable.append(f"unreadable results.json: {exc}")
    try:
        done = _finished_stages(run, spec.distill.steps_per_stage) if spec.distill is not None else set()
    except RecordError as exc:
        done = set()
        unreadable.append(f"unreadable distill.jsonl: {exc}")
    if step is None:
        status = "not started"
    elif total is not None and step < total:
        status = "stopped (the same mstar run resumes it)"
    else:
        status = "finished" if results is not None else "trained, not evaluated"
    present = {int(p.name.split("-")[-1]) for p in (run / "checkpoints").glob("distill-*")
               if p.name.split("-")[-1].isdigit()}
    distilled = sorted(present & done, reverse=True)
    changed = max((_mtime(p) for p in run.iterdir()), default=now)
    return {**entry, "family": spec.process.family, "data": spec.data.name, "coupling": spec.process.coupling.kind,
            "step": step or 0, "steps": total, "status": "; ".join(unreadable) or status, "distilled": distilled,
            "results": (results or {}).get("results", [])[:2], "updated": max(0.0, now - changed)}


def trained_step(directory: Path) -> int | None:
    """The optimiser step of the newest training checkpoint file (not loaded), None when there is
    none. Taken from the ``step-*.pt`` names, so a missing or dangling ``latest`` pointer does not
    matter."""
    latest = latest_checkpoint(directory)
    return int(PATTERN.fullmatch(latest.name).group(1)) if latest is not None else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # a temporary file of a running command, renamed meanwhile
        return 0.0


def _finished_stages(run: Path, per_stage: int) -> set[int]:
    """The evaluation counts of the stages whose last step distill.jsonl logged (a torn last line
    is left out)."""
    return {r.get("stage") for r in read_jsonl(run / "distill.jsonl") if r.get("step") == per_stage}


def ago(seconds: float) -> str:
    """``12s``, ``5 min``, ``3 h``, ``2 d`` ago."""
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"
