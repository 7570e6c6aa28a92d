"""The KL signal-to-noise ratio: the per-step information measure used by ``snr-matched`` and by
:func:`gaussian_equivalent_snr` for schedules that were not matched to a Gaussian one.

Definition, for a family at one step with parameters θ and a reference data distribution x0, x0'
i.i.d. (in the Gaussian family's coordinates g(x0)):

    SNR_KL(θ) = E[ KL(q_θ(· | x0) ‖ q_θ(· | x0')) ] / E[ ½ ‖g(x0) − g(x0')‖² ].

For the Gaussian family N(m x0, v I) the KL is m² ‖x0 − x0'‖² / (2v), so SNR_KL = m²/v is the
SNR exactly, for any reference. Why this measure: it is the scale of the per-step loss (the VLB
term is such a KL with x0' = x̂0); KLs of independent observations add, which is what makes
Theorem 2 work (Σ_{s≥t} SNR^SS_s = SNR^D_t is additivity of the pairwise KL); it has a closed form
for every family (every family implements its KL in closed form), needs no sampling and is
cheap enough for an exact bisection per step; at low information it agrees with mutual-information
matching (both reduce to the Fisher information). Unlike MI it does not saturate for discrete
data (it grows without bound, logarithmically for categorical), so a per-step bisection stays
well-posed.

For an exponential family with natural parameter η(x0) and mean parameter μ(x0) = E[T(x) | x0],
the KL is a Bregman divergence of the log-normaliser, and averaging over pairs from one
distribution the log-normaliser terms cancel:

    E[KL(x0 ‖ x0')] = tr Cov(μ(x0), η(x0)),

a single expectation over x0 (trapezoid rules in logit or log coordinates, or Gauss–Hermite,
converged to ~1e-12). Each family's class holds its measure (``Family.kl_snr``: the reference
distribution, its Gaussian coordinates g and the closed form are in each docstring) and a
one-parameter path λ ↦ schedule parameters (``Family.kl_snr_path``) along which SNR_KL increases
from 0 (λ → 0, the prior) to ∞, used by the bisection in :mod:`.matching`. A family without a
closed form gets the base class's estimate from its own ``kl``.
"""
from __future__ import annotations

import numpy as np

from mstar_engine.families import Family, get

Params = dict[str, np.ndarray]
Shape = tuple[int, ...]


def resolve_shape(family: str | type[Family], event_shape: Shape | None) -> Shape:
    """The data's event shape, or the family's reference shape (``Family.kl_snr_shape``) without one."""
    if event_shape is None:
        return tuple(get(family).kl_snr_shape)
    return tuple(int(s) for s in event_shape)


def kl_snr(family: str | type[Family], params: Params, event_shape: Shape | None = None) -> np.ndarray:
    """SNR_KL of each entry of the schedule arrays ``params`` (see the module docstring)."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    return np.asarray(get(family).kl_snr(arrays, resolve_shape(family, event_shape)), dtype=np.float64)
