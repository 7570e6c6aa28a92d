"""``mstar runs``: the run directories under a folder at a glance, read from their files (no
checkpoint is loaded): what each trains, how far it got, its distillation stages and its results.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from mstar_engine.plan import compile_plan
from mstar_engine.spec import SpecError, load_spec
from mstar_engine.train.checkpoint import latest_checkpoint


def run_directories(folder: str | Path) -> list[Path]:
    """Run directories (holding ``spec.resolved.toml``) in ``folder`` and their ``compare/``
    variants, in name order; ``folder`` itself when it is one."""
    folder = Path(folder)
    found = [folder] if (folder / "spec.resolved.toml").is_file() else []
    for resolved in sorted(folder.glob("*/spec.resolved.toml")):
        found.append(resolved.parent)
    out = []
    for run in found:
        out.append(run)
        out += sorted(r.parent for r in (run / "compare").glob("*/spec.resolved.toml"))
    return out


def overview(folder: str | Path, now: float | None = None) -> list[dict]:
    """One entry per run directory: ``run``, ``family``, ``data``, ``coupling``, ``step``,
    ``steps``, ``status``, ``distilled`` (finished stages' evaluation counts), ``results`` (first
    rows of results.json) and ``updated`` (seconds since the last file change)."""
    now = time.time() if now is None else now
    return [_entry(run, Path(folder), now) for run in run_directories(folder)]


def _entry(run: Path, folder: Path, now: float) -> dict:
    name = str(run.relative_to(folder)) if run != folder else run.name
    entry = {"run": name, "path": str(run)}
    try:
        loaded = load_spec(run / "spec.resolved.toml", semantic=False)
    except SpecError as exc:
        return {**entry, "status": f"unreadable spec: {exc.issues[0] if exc.issues else exc}"}
    spec = loaded.spec
    latest = latest_checkpoint(run / "checkpoints" / "train")
    step = int(latest.stem.split("-")[-1]) if latest is not None else 0
    total = compile_plan(loaded, cuda_count=0).stages[0].optimizer_steps  # None: epochs of a size seen at run time
    results = _read_json(run / "results.json")
    if latest is None:
        status = "not started"
    elif total is not None and step < total:
        status = "stopped (the same mstar run resumes it)"
    else:
        status = "finished" if results is not None else "trained, not evaluated"
    done = _finished_stages(run, spec.distill.steps_per_stage) if spec.distill is not None else set()
    present = {int(p.name.split("-")[-1]) for p in (run / "checkpoints").glob("distill-*")}
    distilled = sorted(present & done, reverse=True)
    changed = max((p.stat().st_mtime for p in run.iterdir()), default=now)
    return {**entry, "family": spec.process.family, "data": spec.data.name, "coupling": spec.process.coupling.kind,
            "step": step, "steps": total, "status": status, "distilled": distilled,
            "results": (results or {}).get("results", [])[:2], "updated": max(0.0, now - changed)}


def _finished_stages(run: Path, per_stage: int) -> set[int]:
    """The evaluation counts of the stages whose last step distill.jsonl logged."""
    lines = (run / "distill.jsonl").read_text().splitlines() if (run / "distill.jsonl").is_file() else []
    return {r.get("stage") for r in map(_loads, lines) if r and r.get("step") == per_stage}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _loads(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


def ago(seconds: float) -> str:
    """``12s``, ``5 min``, ``3 h``, ``2 d`` ago."""
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"
