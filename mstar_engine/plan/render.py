"""The plan as text tables (what ``mstar plan`` prints and ``plan.txt`` holds)."""
from __future__ import annotations

from tabulate import tabulate

from mstar_engine.plan.compile import Plan, model_summary


def render_plan(plan: Plan, settings: bool = True) -> str:
    spec = plan.spec
    parts = [f"Plan for '{spec.experiment.name}' → {plan.run_dir}"]
    if spec.experiment.description:
        parts.append(spec.experiment.description)
    proc = spec.process
    network = "its own conv encoder and decoder" if proc.kind == "vae" else spec.network.kind
    summary = [("kind", model_summary(proc)), ("data", spec.data.name), ("network", network)] \
        if proc.kind != "exponential-family" else [
        ("family", proc.family), ("data", f"{spec.data.name}"), ("steps T", proc.steps),
        ("schedule", proc.schedule.name), ("coupling", proc.coupling.kind), ("network inputs", proc.inputs),
        ("loss", f"{proc.loss} (weighting {proc.loss_weighting})"), ("network", spec.network.kind),
    ]
    parts.append("Model\n" + tabulate(summary, tablefmt="plain", disable_numparse=True))
    stages = [(i + 1, s.name, s.description, "—" if s.optimizer_steps is None else s.optimizer_steps,
               s.evaluations, "—" if s.examples is None else s.examples, s.output)
              for i, s in enumerate(plan.stages)]
    parts.append(_table("Stages", ["#", "stage", "what", "optimiser steps", "network evals", "examples", "output"],
                        stages))
    d = plan.devices
    parts.append(_table("Devices", ["accelerator", "processes", "backend", "batch / process", "micro-batch"],
                        [(d.accelerator, d.processes, d.backend, d.batch_per_process, d.micro_batch)]))
    parts.append(_table("Outputs", ["file", "path"], plan.outputs))
    if settings:
        parts.append(_table("Resolved settings", ["key", "value", "source"], plan.settings))
    if plan.warnings:
        parts.append("Warnings:\n" + "\n".join(f"  {w}" for w in plan.warnings))
    return "\n\n".join(parts) + "\n"


def _table(title: str, headers: list[str], rows) -> str:
    return f"{title}\n" + tabulate(list(rows), headers=headers, tablefmt="simple", disable_numparse=True)
