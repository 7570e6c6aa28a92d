"""Runs with ``[compare]`` variants: train and evaluate the spec and each variant, one table
(:func:`mstar_engine.report.comparison_table`).

A spec's ``[compare]`` table names other models as overrides of the spec itself::

    [compare]
    star-shaped = ["process.coupling.kind=independent", "process.inputs=tail"]

Each variant is a complete run of its own in ``RUN/compare/<name>/`` (resumable, loadable with
``mstar sample``/``mstar eval``). The main run's ``results.json`` gains a ``compare`` entry and
``comparison.txt`` holds the table printed at the end.
"""
from __future__ import annotations

import json
from typing import Callable

from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.distributed.launch import log_to_stderr, run_processes
from mstar_engine.plan import Plan, compile_plan
from mstar_engine.report import comparison_table
from mstar_engine.runner import execute
from mstar_engine.spec import LoadedSpec, load_spec_text, variant_overrides


def variant_spec(plan: Plan, loaded: LoadedSpec, name: str, *, ready: bool = True) -> LoadedSpec:
    """The loaded spec of variant ``name``, placed in ``RUN/compare/name``."""
    place = (f"experiment.output_dir={json.dumps(str(plan.run_dir / 'compare'))}", f"experiment.name={name}")
    return load_spec_text(loaded.text, loaded.file, (*variant_overrides(loaded, name), *place), ready=ready)


def execute_all(plan: Plan, loaded: LoadedSpec, *, resume: bool = True, download: bool = False,
                log: Callable[[str], None] = print, group: Group | None = None) -> dict:
    """Execute the spec, then each ``[compare]`` variant; returns the main results with a
    ``compare`` entry (variant name → its results) when there are variants.

    With ``devices.processes > 1`` (or under torchrun) this starts the processes and runs in each
    of them (``group``); their log lines go to standard error from rank 0."""
    world = plan.devices.processes  # the spec's, or torchrun's
    if group is None and world > 1:
        return run_processes(execute_all, world, plan.devices.backend, plan, loaded, resume=resume,
                             download=download, log=log_to_stderr)
    group = group or SINGLE
    results = execute(plan, loaded, resume=resume, log=log, download=download, group=group)
    if not plan.spec.compare:
        return results
    if group.main:
        results["compare"] = {}
    for name in plan.spec.compare:
        variant = variant_spec(plan, loaded, name)
        variant_plan = compile_plan(variant, processes=plan.devices.processes)
        if group.main:
            log(f"[compare] {name}: {' '.join(plan.spec.compare[name])}; run directory {variant_plan.run_dir}")
        out = execute(variant_plan, variant, resume=resume, log=log, download=download, group=group)
        if group.main:
            results["compare"][name] = out
    if not group.main:
        return None
    (plan.run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (plan.run_dir / "comparison.txt").write_text(comparison_table(results) + "\n")
    return results
