"""Runs with ``[compare]`` variants: train and evaluate the spec and each variant, one table
(:func:`mstar_engine.app.report.comparison_table`).

A spec's ``[compare]`` table names other models as overrides of the spec itself::

    [compare]
    star-shaped = ["process.coupling.kind=independent", "process.inputs=tail"]

Each variant is a complete run of its own in ``RUN/compare/<name>/`` (resumable, loadable with
``mstar sample``/``mstar eval``). The main run's ``results.json`` gains a ``compare`` entry and
``comparison.txt`` holds the table printed at the end.
"""
from __future__ import annotations

import json
from contextlib import nullcontext
from typing import Callable

from mstar_engine.distributed.env import secondary_process
from mstar_engine.distributed.group import Group
from mstar_engine.distributed.launch import launch, log_to_stderr
from mstar_engine.plan import Plan, compile_plan
from mstar_engine.app.report import comparison_table
from mstar_engine.rundir.claim import claim
from mstar_engine.rundir.files import write_text
from mstar_engine.rundir.records import write_json
from mstar_engine.app.runner import execute
from mstar_engine.spec import LoadedSpec, load_spec_text, variant_overrides


def variant_spec(plan: Plan, loaded: LoadedSpec, name: str, *, ready: bool = True) -> LoadedSpec:
    """The loaded spec of variant ``name``, placed in ``RUN/compare/name``."""
    place = (f"experiment.output_dir={json.dumps(str(plan.run_dir / 'compare'))}", f"experiment.name={name}")
    return load_spec_text(loaded.text, loaded.file, (*variant_overrides(loaded, name), *place), ready=ready)


def execute_all(plan: Plan, loaded: LoadedSpec, *, resume: bool = True, overwrite: bool = False,
                download: bool = False, log: Callable[[str], None] = print) -> dict:
    """Execute the spec, then each ``[compare]`` variant; returns the main results with a
    ``compare`` entry (variant name → its results) when there are variants.
    The run directory (and each variant's) is locked for the whole call; ``resume`` False starts
    afresh, refused over an existing run unless ``overwrite`` moves it aside
    (:func:`~mstar_engine.rundir.claim.claim`).
    With ``devices.processes > 1`` (or under torchrun) this starts the processes and runs in each
    of them; their log lines go to standard error from rank 0."""
    world = plan.devices.processes  # the spec's, or torchrun's
    variants = [plan.run_dir / "compare" / name for name in plan.spec.compare or {}]
    held = nullcontext() if secondary_process() else \
        claim(plan.run_dir, "run", resume=resume, overwrite=overwrite, also=variants, log=log)
    with held:
        return launch(_execute_all, world, plan.devices.backend, plan, loaded, resume=resume, download=download,
                      log=log_to_stderr if world > 1 else log)


def _execute_all(plan: Plan, loaded: LoadedSpec, *, resume: bool, download: bool, log: Callable[[str], None],
                 group: Group) -> dict | None:
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
    write_json(plan.run_dir / "results.json", results)
    write_text(plan.run_dir / "comparison.txt", comparison_table(results) + "\n")
    return results
