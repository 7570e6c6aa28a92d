"""Learning-rate and EMA schedules as pure functions of the optimiser step, so that a resumed run
cannot drift from an uninterrupted one."""
from __future__ import annotations

import math


def learning_rate(step: int, peak: float, total: int, warmup: int = 0, decay: str = "constant") -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then ``decay`` to 0 at ``total``:
    constant (no decay), linear, or cosine. ``step`` counts from 0 (the step being taken)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if decay == "constant" or total <= warmup:
        return peak
    progress = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
    if decay == "linear":
        return peak * (1.0 - progress)
    if decay == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate decay {decay!r}; expected constant, linear or cosine")


def ema_decay(step: int, target: float, warmup: bool = True) -> float:
    """EMA decay after ``step`` optimiser steps: min(target, (1 + n)/(10 + n)) with warm-up (the
    published "initial acceleration"), else the target."""
    return min(target, (1.0 + step) / (10.0 + step)) if warmup else target
