"""Semantic checks of ``process.kind``: flow matching and the energy-score model work in R^d with
Gaussian noise, and each distillation method distils the kinds it is made for. Settings of another
kind (``[process.flow]`` under M-Star, the coupling under flow matching) are ignored without a
warning, so that one spec's ``[compare]`` variants can switch kinds."""
from __future__ import annotations

from mstar_engine.families import get

#: Distillation methods and the kinds whose models they distil.
METHOD_KINDS = {"progressive": ("exponential-family",), "consistency": ("exponential-family",),
                "reflow": ("flow-matching",)}


def check_kind(c) -> None:
    proc = c.spec.process
    kind = proc.kind
    d = c.spec.distill
    if d is not None and kind not in METHOD_KINDS[d.method]:
        allowed = [m for m, kinds in METHOD_KINDS.items() if kind in kinds]
        c.add(("distill", "method"), f"distill.method = \"{d.method}\" distils {' or '.join(METHOD_KINDS[d.method])} "
              f"models, not process.kind = \"{kind}\"",
              f"use method = {' or '.join(repr(m) for m in allowed)}" if allowed else
              "remove [distill]: this kind samples in few steps as trained", related=(("process", "kind"),))
    if d is not None and d.method == "consistency" and proc.inputs != "state":
        c.add(("distill", "method"), "consistency distillation needs a teacher whose deterministic sampler is a "
              "function of the state alone", 'train with process.inputs = "state" (e.g. the ddpm coupling sampled with '
              'sample.coupling = "deterministic")', related=(("process", "inputs"),))
    if d is not None and d.method != "progressive":
        if d.stages is not None:
            c.add(("distill", "stages"), f"distill.stages are progressive distillation's halvings; {d.method} makes "
                  "one student", "remove stages and set to = the student's sampling evaluations (e.g. 1, 2, 4 or 8)")
        if d.to is None:
            c.add(("distill",), f"distill.method = \"{d.method}\" needs to = the student's sampling evaluations",
                  "add to = 1 (or 2, 4, 8)")
        if d.to is not None and d.to > proc.steps:
            c.add(("distill", "to"), f"{d.to} evaluations exceed process.steps = {proc.steps}", f"use at most {proc.steps}")
    if kind == "exponential-family":
        return
    if get(proc.family).domain != "real":
        c.add(("process", "family"), f"process.kind = \"{kind}\" works in R^d with Gaussian noise, not with the "
              f"{proc.family} family", 'set process.family = "gaussian"', related=(("process", "kind"),))
