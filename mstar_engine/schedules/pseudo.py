"""Pseudo-step rules: the index-0 entry of a schedule given its steps 1..T (notes §2.4).

The pseudo step is the sharp marginal used by the last KL term (t = 1) and the final draw. One
rule per family, applied by every builder that produces steps 1..T only (the published
non-Gaussian schedules, ``snr-matched``, and ``custom`` schedules given with T values):

* gaussian: ᾱ_0 = (1 + ᾱ_1)/2 with ᾱ_1 = m_1², and v_0 = v_1/2 (the published code's choice;
  for variance-preserving schedules v_0 = 1 − ᾱ_0). Noise halved, never zero.
* beta: ν_0 = ν_1 + 2. The published pseudo step has total concentration n = ν_1 + 4 (code
  parameterisation n = ν + 2, ξ = ξ_1/2); in Beta(1 + ν x0, 1 + ν(1 − x0)) the total
  concentration is ν + 2, hence ν_0 = ν_1 + 2: slightly sharper than step 1, mode still x0.
* dirichlet, wishart, gamma: a copy of step 1 (published Dirichlet and Wishart; Gamma is the
  one-dimensional analogue of the Wishart schedule and follows it).
* vmf, von-mises: κ_0 = 1.1 κ_1 (published vMF; the circle follows the sphere).
* categorical: β̄_0 = 0, the identity: the t = 1 KL becomes the cross-entropy −log x̂0[x0].
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Params = dict[str, np.ndarray]


def _gaussian(p: Params) -> dict[str, float]:
    m1, v1 = p["mean"][0], p["var"][0]
    return {"mean": float(np.sqrt((1 + m1 ** 2) / 2)), "var": float(v1 / 2)}


def _copy(p: Params) -> dict[str, float]:
    return {k: float(v[0]) for k, v in p.items()}


RULES: dict[str, Callable[[Params], dict[str, float]]] = {
    "gaussian": _gaussian,
    "beta": lambda p: {"nu": float(p["nu"][0] + 2.0)},
    "dirichlet": _copy,
    "wishart": _copy,
    "gamma": _copy,
    "vmf": lambda p: {"kappa": float(1.1 * p["kappa"][0])},
    "von-mises": lambda p: {"kappa": float(1.1 * p["kappa"][0])},
    "categorical": lambda p: {"bar_beta": 0.0},
}


def with_pseudo_step(family: str, params: Params) -> Params:
    """Prepend the pseudo step to arrays holding steps 1..T. Families without a rule (custom
    families) copy step 1."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    first = RULES.get(family, _copy)(params)
    return {k: np.concatenate([[first[k]], v]) for k, v in params.items()}
