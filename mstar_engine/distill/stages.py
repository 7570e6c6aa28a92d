"""The stage step counts of progressive distillation (each stage halves the evaluations), and which
regression target a model can use."""
from __future__ import annotations


class DistillError(ValueError):
    """Distillation settings that cannot work; the message says how to fix them."""


def sampling_coupling(coupling: str, inputs: str) -> str:
    """``distill.coupling`` with ``auto`` resolved: deterministic (ρ = 1) for state-input models, else
    the model's own coupling."""
    if coupling != "auto":
        return coupling
    return "deterministic" if inputs == "state" else "model"


def landing_exists(family, inputs: str, coupling: str) -> bool:
    """True when the landing target (MATH.md §3, :mod:`.targets`) can be solved for a model of
    ``family`` (a class) with these network inputs and this distillation coupling: state input,
    and maps acting coordinate by coordinate, or a chart under the deterministic coupling."""
    return inputs == "state" and (family.coordinatewise or (family.has_chart and coupling == "deterministic"))


def halvings(steps: int) -> list[int]:
    out, n = [], steps
    while n % 2 == 0 and n > 1:
        n //= 2
        out.append(n)
    return out


def halving_problem(steps: int, to: int) -> str:
    """Empty if ``to`` is ``steps`` divided by a power of two (at least once), else why not."""
    if to >= steps:
        return f"distilling to {to} steps needs fewer than process.steps = {steps}"
    if to not in halvings(steps):
        return f"{to} does not divide process.steps = {steps} by a power of two"
    return ""


def derive_stages(steps: int, to: int | None = None, stages: list[int] | None = None) -> list[int]:
    """Student evaluation counts, first stage first: ``to`` halves ``steps`` until it is reached;
    explicit ``stages`` must each halve the previous one (the first halves ``steps``)."""
    if (to is None) == (stages is None):
        raise DistillError("give exactly one of to (e.g. --to 8) or explicit stages")
    if to is not None:
        options, problem = halvings(steps), halving_problem(steps, to)
        if problem:
            hint = f"use one of {', '.join(map(str, options))}" if options else \
                f"a teacher with {steps} steps (odd) cannot be halved; train with a power-of-two multiple of {to}"
            raise DistillError(f"{problem}: {hint}")
        return options[:options.index(to) + 1]
    if not stages:
        raise DistillError("stages is empty: list at least one step count, e.g. [" + str(steps // 2) + "]")
    previous = steps
    for i, n in enumerate(stages):
        if n * 2 != previous:
            hint = f"use {previous // 2}" if previous % 2 == 0 and previous > 1 else "end the stages here"
            raise DistillError(f"stage {i + 1} has {n} steps but must halve the previous {previous}: {hint}")
        previous = n
    return list(stages)
