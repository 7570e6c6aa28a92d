"""``[compare]`` variants: the spec's other models, each a run of its own, and their one table
(:func:`mstar_engine.app.report.comparison_table`); :func:`mstar_engine.app.runner.run` executes them.

A spec's ``[compare]`` table names other models as overrides of the spec itself::

    [compare]
    star-shaped = ["process.coupling.kind=independent", "process.inputs=tail"]

Each variant is a complete run of its own in ``RUN/compare/<name>/`` (resumable, loadable with
``mstar sample``/``mstar eval``). The main run's ``results.json`` gains a ``compare`` entry and
``comparison.txt`` holds the table printed at the end.
"""
from __future__ import annotations

import json

from mstar_engine.app.report import comparison_table
from mstar_engine.plan import Plan, compile_plan
from mstar_engine.rundir.files import write_text
from mstar_engine.rundir.records import write_json
from mstar_engine.spec import LoadedSpec, load_spec_text, variant_overrides


def variant_spec(plan: Plan, loaded: LoadedSpec, name: str, *, ready: bool = True) -> LoadedSpec:
    """The loaded spec of variant ``name``, placed in ``RUN/compare/name``."""
    place = (f"experiment.output_dir={json.dumps(str(plan.run_dir / 'compare'))}", f"experiment.name={name}")
    return load_spec_text(loaded.text, loaded.file, (*variant_overrides(loaded, name), *place), ready=ready)


def variants(plan: Plan, loaded: LoadedSpec) -> list[tuple[str, LoadedSpec, Plan]]:
    """(name, loaded spec, plan) of each ``[compare]`` variant, in the spec's order."""
    out = []
    for name in plan.spec.compare or {}:
        variant = variant_spec(plan, loaded, name)
        out.append((name, variant, compile_plan(variant, processes=plan.devices.processes)))
    return out


def record_comparison(plan: Plan, results: dict) -> None:
    """The main run's ``results.json`` with its ``compare`` entry, and ``comparison.txt``."""
    write_json(plan.run_dir / "results.json", results)
    write_text(plan.run_dir / "comparison.txt", comparison_table(results) + "\n")
