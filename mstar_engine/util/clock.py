"""Durations for people: ``2d 03h``, ``4h 05m``, ``12m 30s``, ``8.2s`` (ETAs, time estimates)."""
from __future__ import annotations

import math


def duration(seconds: float) -> str:
    """The two leading units of ``seconds``; ``?`` when it is not finite."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{d}d {h:02d}h" if d else f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"
