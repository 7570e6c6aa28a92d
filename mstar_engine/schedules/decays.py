"""Closed-form published schedules (notes §3.3–§3.5) and the documented choices for the
paper-only families (§3.7). Builders return steps 1..T; the pseudo step is added by
:mod:`.pseudo`. Paper step t = 1..T is the published code's t − 1, and τ = (t − 1)/(T − 1).

exponential_decay(high, low, ratio, T): the published offset geometric decay

    y_t = low + (high − low) (r^{T−t} − 1) / (r^{T−1} − 1),

whose published per-step ratio r is given for T = 64. For another T the total decay
R = r^63 is kept, r_T = R^{1/(T−1)}, so the curve is the same function of τ:
y = low + (high − low) expm1((1 − τ) log R) / expm1(log R). T = 64 reproduces the published
arrays; T = 1 gives [high].

degree_decay(high, low, degree, T) = linspace(high^{1/degree}, low^{1/degree}, T)^degree.

* dirichlet-exp: ν = exponential_decay(2000, 1e-6, 1.25).
* wishart-exp: n = exponential_decay(20000, p + 3, 1.3) (p + 3 = 5 for the published p = 2; a
  Wishart needs n > p − 1), ξ = degree_decay(1, 1e-4, 0.5) = sqrt(linspace(1, 1e-8)).
* vmf-spline: log10 κ is the scipy CubicSpline (not-a-knot) through (t/T, log10 κ) = (0.01, 3),
  (0.3, 0.7), (0.7, 0), (1, −3), evaluated at (t − 1)/T (the published code evaluates 100 k/N on
  knots scaled by 100, the same thing).
* gamma-exp (no published schedule): the one-dimensional analogue of wishart-exp. Shape
  α = exponential_decay(1e4, 1, 1.3): relative noise 1/sqrt(α) from 1 % to 100 %;
  ξ = 1 − degree_decay(1, 1e-4, 0.5) from 0 (mean x0) to 1 − 1e-4 (mean 1), so q_T ≈ Gamma(1, 1),
  the family's prior.
* von-mises-exp (no published schedule): κ = exponential_decay(1000, 1e-3, 1.25), the Dirichlet
  decay shape over the vMF range: from a 1.8° spread to practically uniform.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

PUBLISHED_STEPS = 64


def exponential_decay(high: float, low: float, ratio: float, steps: int,
                      published_steps: int = PUBLISHED_STEPS) -> np.ndarray:
    """Offset geometric decay from ``high`` (t = 1) to ``low`` (t = T), see the module docstring."""
    if steps == 1:
        return np.array([float(high)])
    log_total = (published_steps - 1) * np.log(ratio)
    tau = np.arange(steps, dtype=np.float64) / (steps - 1)
    return low + (high - low) * np.expm1((1 - tau) * log_total) / np.expm1(log_total)


def degree_decay(high: float, low: float, degree: float, steps: int) -> np.ndarray:
    return np.linspace(high ** (1 / degree), low ** (1 / degree), steps, dtype=np.float64) ** degree


VMF_KNOTS = ((0.01, 3.0), (0.3, 0.7), (0.7, 0.0), (1.0, -3.0))


def vmf_spline_schedule(steps: int) -> dict[str, np.ndarray]:
    """κ_t for t = 1..T of the published vMF schedule."""
    x, y = zip(*VMF_KNOTS)
    spline = CubicSpline(np.array(x), np.array(y))
    return {"kappa": 10.0 ** spline(np.arange(steps, dtype=np.float64) / steps)}


def dirichlet_exp(steps: int) -> dict[str, np.ndarray]:
    return {"nu": exponential_decay(2000.0, 1e-6, 1.25, steps)}


def wishart_exp(steps: int, p: int = 2) -> dict[str, np.ndarray]:
    return {"df": exponential_decay(20000.0, p + 3.0, 1.3, steps),
            "xi": degree_decay(1.0, 1e-4, 0.5, steps)}


def gamma_exp(steps: int) -> dict[str, np.ndarray]:
    return {"shape": exponential_decay(1e4, 1.0, 1.3, steps),
            "xi": 1.0 - degree_decay(1.0, 1e-4, 0.5, steps)}


def von_mises_exp(steps: int) -> dict[str, np.ndarray]:
    return {"kappa": exponential_decay(1000.0, 1e-3, 1.25, steps)}
