"""``snr-matched``: per-step bisection so that the family's KL-SNR (:mod:`.kl_snr`) equals the SNR
of a reference Gaussian schedule, for any family with a measure.

For each step t = 1..T, λ_t solves SNR_KL(path(λ_t)) = SNR^ref_t, by bisection on log λ between
the family's bounds (all steps at once, vectorised), to a relative width of 1e-12 in λ (the
measure is then matched to ~1e-11 relative). The pseudo step follows the family's rule
(:mod:`.pseudo`). A target outside the family's reach is clipped to the nearest bound: only the
categorical family has a finite reach, SNR_KL ≤ log(1 + K·1e12) ≈ 31 at β̄ = 1e-12, so the first
steps of a reference with SNR > 31 get β̄ = 1e-12 (practically clean tokens).

The reference is one of the Gaussian schedules (``ss-cosine`` by default, ``ss-linear``,
``cosine``, ``linear``), rebuilt for the same T. Results are cached on disk per (family, T, event
shape, reference) by :mod:`.cache`.

A family without a closed-form measure uses the base class's estimate (``Family.kl_snr``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from mstar_engine.families import Family, get
from mstar_engine.schedules.gaussian import gaussian_snr
from mstar_engine.util import cache as schedule_cache
from mstar_engine.schedules.kl_snr import Params, Shape, resolve_shape
from mstar_engine.schedules.pseudo import with_pseudo_step

REFERENCES = ("ss-cosine", "ss-linear", "cosine", "linear")
REL_TOL = 1e-12


def bisect(measure: Callable[[np.ndarray], np.ndarray], target: np.ndarray,
           bounds: tuple[float, float], rel_tol: float = REL_TOL) -> np.ndarray:
    """λ with measure(λ) = target elementwise, for a measure increasing in λ; bisection in log λ.

    Targets outside [measure(lo), measure(hi)] get the bound.
    """
    target = np.asarray(target, dtype=np.float64)
    lo = np.full(target.shape, np.log(bounds[0]))
    hi = np.full(target.shape, np.log(bounds[1]))
    below = measure(np.exp(lo)) >= target
    above = measure(np.exp(hi)) <= target
    for _ in range(200):
        if np.max(hi - lo) <= rel_tol:
            break
        mid = 0.5 * (lo + hi)
        low_side = measure(np.exp(mid)) < target
        lo = np.where(low_side, mid, lo)
        hi = np.where(low_side, hi, mid)
    lam = np.exp(0.5 * (lo + hi))
    lam = np.where(below, bounds[0], lam)
    return np.where(above, bounds[1], lam)


def match_snr(family: str | type[Family], target_snr: np.ndarray, event_shape: Shape | None = None) -> Params:
    """Schedule parameters (same length as ``target_snr``) whose KL-SNR equals ``target_snr``."""
    cls, shape = get(family), resolve_shape(family, event_shape)
    lam = bisect(lambda x: cls.kl_snr(cls.kl_snr_path(x, shape), shape), target_snr, cls.kl_snr_bounds)
    return cls.kl_snr_path(lam, shape)


def build_snr_matched(steps: int, family: str | type[Family], event_shape: Shape | None = None,
                      reference: str = "ss-cosine", cache: bool = True) -> Params:
    """The ``snr-matched`` schedule of ``family`` for T = ``steps`` (arrays of length T + 1)."""
    if reference not in REFERENCES:
        raise ValueError(f"snr-matched reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    shape = resolve_shape(family, event_shape)
    key = {"schedule": "snr-matched", "family": family if isinstance(family, str) else family.name,
           "steps": int(steps), "shape": shape, "reference": reference}

    def build() -> Params:
        target = gaussian_snr(reference, steps)[1:]
        return with_pseudo_step(family, match_snr(family, target, shape))

    return schedule_cache.cached(key, build, use_cache=cache)
