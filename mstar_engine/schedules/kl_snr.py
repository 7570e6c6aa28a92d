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
converged to ~1e-12). Per family (reference distribution; Gaussian coordinates g; result):

* gaussian: any; g = x; m²/v.
* beta: x0 ~ Beta(1.5, 1.5) (std 1/4, image-like); g = 2 x0 − 1 (the [−1, 1] image convention);
  ν Cov(x0, ψ(1 + ν x0) − ψ(1 + ν(1 − x0))) / (4 Var x0).
* dirichlet (K classes): x0 ~ Dir(1, …, 1), each coordinate Beta(1, K − 1); g = x0;
  ν Cov(x, ψ(1 + ν x)) / Var x over one coordinate.
* vmf (S^{d−1}): x0 uniform; g = x0; κ A_d(κ), A_d = I_{d/2}(κ)/I_{d/2−1}(κ).
* von-mises: x0 uniform on the circle; g = (cos x0, sin x0); κ I_1(κ)/I_0(κ).
* categorical (K classes): x0 uniform one-hot; g = one-hot; (1 − β̄) log(1 + K(1 − β̄)/β̄)
  (β̄ = 0, the identity pseudo step, has infinite SNR; β̄ is floored at 1e-300 there, giving a
  finite stand-in ≈ log(K · 1e300) ≈ 694).
* wishart (p×p): X0 = Q diag(λ_1..λ_p) Qᵀ with Q Haar-orthogonal and λ_k i.i.d. log-normal,
  log λ ~ N(0, 0.5²) (rotation invariant, median I); g = X0 (Frobenius). With
  M⁻¹ = X0(ξ I + (1 − ξ) X0)⁻¹, whose eigenvalues are f(λ) = λ/(ξ + (1 − ξ)λ), rotation invariance
  gives E M⁻¹ = E f · I, so E KL = −½ n ξ [E tr(M⁻¹X0⁻¹) − tr(E M⁻¹ E X0⁻¹)] = −½ n ξ p Cov(f(λ), 1/λ)
  and Σ_ab Var X0_ab = p Var λ: SNR_KL = −½ n ξ Cov(f(λ), 1/λ) / Var λ, a 1-D Gauss–Hermite
  integral, the same for every p.
* gamma: x0 ~ Gamma(4, rate 4) (mean 1, std 1/2); g = x0;
  −α(1 − ξ) Cov(x0/(ξ x0 + 1 − ξ), 1/x0) / Var x0.

Each family also has a one-parameter path λ ↦ schedule parameters along which SNR_KL increases
from 0 (λ → 0, the prior) to ∞, used by the bisection in :mod:`.matching`:
gaussian λ = SNR (variance preserving); beta, dirichlet ν = λ; vmf, von-mises κ = λ; categorical
β̄ = 1/(1 + λ); wishart n = p + 3 + λ, ξ = λ/(1 + λ); gamma α = 1 + λ, ξ = 1/(1 + λ).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special

Params = dict[str, np.ndarray]
Shape = tuple[int, ...]



@dataclass(frozen=True)
class FamilyMeasure:
    """SNR_KL of one family and its one-parameter path. ``measure`` maps parameter arrays (any
    length) to SNR_KL per entry; ``path`` maps λ > 0 to parameter arrays of λ's length."""

    family: str
    measure: Callable[[Params, Shape], np.ndarray]
    path: Callable[[np.ndarray, Shape], Params]
    default_shape: Shape
    lam_bounds: tuple[float, float] = (1e-12, 1e12)


def _logit_nodes(a: float, b: float, h: float = 0.2, half: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid nodes of x ~ Beta(a, b) on a uniform grid in v = logit x (density ∝ x^a (1 − x)^b
    in v); the integrands below are smooth in v, so the rule converges geometrically (h = 0.2 is
    exact to ~1e-12 relative for ν up to 1e8)."""
    v = np.arange(-half, half + h / 2, h)
    lx, l1x = -np.logaddexp(0.0, -v), -np.logaddexp(0.0, v)
    w = np.exp(a * lx + b * l1x - np.max(a * lx + b * l1x))
    return np.exp(lx), w / w.sum()


def _log_nodes(shape: float, rate: float, h: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid nodes of x ~ Gamma(shape, rate) on a uniform grid in u = log x."""
    u = np.arange(-25.0, 5.0 + h / 2, h)
    x = np.exp(u)
    logw = shape * u - rate * x
    w = np.exp(logw - logw.max())
    return x, w / w.sum()


def _cov(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weighted covariance over the last axis (x: nodes; y: (..., nodes))."""
    xm = x - np.sum(w * x)
    return np.sum(w * xm * y, axis=-1)


def _col(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)[..., None]


# ---------------------------------------------------------------- gaussian
def _gaussian_measure(p: Params, shape: Shape) -> np.ndarray:
    return np.asarray(p["mean"], dtype=np.float64) ** 2 / np.asarray(p["var"], dtype=np.float64)


def _gaussian_path(lam: np.ndarray, shape: Shape) -> Params:
    return {"mean": np.sqrt(lam / (1 + lam)), "var": 1 / (1 + lam)}


# ---------------------------------------------------------------- beta
_BETA_X, _BETA_W = _logit_nodes(1.5, 1.5)


def _beta_measure(p: Params, shape: Shape) -> np.ndarray:
    nu, x = _col(p["nu"]), _BETA_X
    diff = special.digamma(1 + nu * x) - special.digamma(1 + nu * (1 - x))
    var = _cov(_BETA_W, x, x)
    return nu[..., 0] * _cov(_BETA_W, x, diff) / (4 * var)


# ---------------------------------------------------------------- dirichlet
def _dirichlet_measure(p: Params, shape: Shape) -> np.ndarray:
    k = shape[-1]
    x, w = _logit_nodes(1.0, k - 1.0)
    nu = _col(p["nu"])
    return nu[..., 0] * _cov(w, x, special.digamma(1 + nu * x)) / _cov(w, x, x)


def _concentration_path(name: str) -> Callable[[np.ndarray, Shape], Params]:
    return lambda lam, shape: {name: np.asarray(lam, dtype=np.float64)}


# ---------------------------------------------------------------- sphere and circle
def _ive_asymptotic(order: float, x: np.ndarray) -> np.ndarray:
    """sqrt(2π x) e^{−x} I_order(x) for large x: 1 − (μ−1)/(8x) + (μ−1)(μ−9)/(2(8x)²) − …, μ = 4 order²."""
    mu, term, total = 4.0 * order ** 2, np.ones_like(x), np.ones_like(x)
    for k in range(1, 6):
        term = -term * (mu - (2 * k - 1) ** 2) / (k * 8.0 * x)
        total = total + term
    return total


def bessel_ratio(order: float, kappa: np.ndarray) -> np.ndarray:
    """I_order(κ) / I_{order−1}(κ) for κ > 0: exponentially scaled Bessel functions, and their
    asymptotic series above κ = 1e5 (relative error < 1e-20 there; scipy's ive loses accuracy)."""
    kappa = np.asarray(kappa, dtype=np.float64)
    large = kappa > 1e5
    small = np.where(large, 1.0, kappa)
    with np.errstate(invalid="ignore", divide="ignore"):
        direct = special.ive(order, small) / special.ive(order - 1, small)
    big = np.where(large, kappa, 1e5)
    asym = _ive_asymptotic(order, big) / _ive_asymptotic(order - 1, big)
    return np.where(large, asym, direct)


def _vmf_measure(p: Params, shape: Shape) -> np.ndarray:
    d = shape[-1]
    kappa = np.asarray(p["kappa"], dtype=np.float64)
    return kappa * bessel_ratio(d / 2, kappa)


def _von_mises_measure(p: Params, shape: Shape) -> np.ndarray:
    kappa = np.asarray(p["kappa"], dtype=np.float64)
    return kappa * bessel_ratio(1.0, kappa)


# ---------------------------------------------------------------- categorical
def _categorical_measure(p: Params, shape: Shape) -> np.ndarray:
    k = shape[-1]
    bb = np.asarray(p["bar_beta"], dtype=np.float64)
    keep = 1.0 - bb
    with np.errstate(divide="ignore"):
        return np.where(keep > 0, keep * np.log1p(k * keep / np.maximum(bb, 1e-300)), 0.0)


def _categorical_path(lam: np.ndarray, shape: Shape) -> Params:
    return {"bar_beta": 1.0 / (1.0 + np.asarray(lam, dtype=np.float64))}


# ---------------------------------------------------------------- wishart
_WISHART_SIGMA = 0.5
_WISHART_L, _WISHART_W = (lambda z, w: (np.exp(_WISHART_SIGMA * z), w / w.sum()))(
    *np.polynomial.hermite_e.hermegauss(80))  # eigenvalues λ = e^{σ Z}, Z ~ N(0, 1)


def _wishart_measure(params: Params, shape: Shape) -> np.ndarray:
    n, xi = _col(params["df"]), _col(params["xi"])
    lam, w = _WISHART_L, _WISHART_W
    f = lam / (xi + (1 - xi) * lam)  # eigenvalues of M⁻¹ = X0 (ξ I + (1 − ξ) X0)⁻¹
    kl = -0.5 * n[..., 0] * xi[..., 0] * _cov(w, 1 / lam, f)
    return kl / _cov(w, lam, lam)


def _wishart_path(lam: np.ndarray, shape: Shape) -> Params:
    lam = np.asarray(lam, dtype=np.float64)
    return {"df": shape[-1] + 3.0 + lam, "xi": lam / (1.0 + lam)}


# ---------------------------------------------------------------- gamma
_GAMMA_X, _GAMMA_W = _log_nodes(4.0, 4.0)  # x0 ~ Gamma(4, rate 4)


def _gamma_measure(p: Params, shape: Shape) -> np.ndarray:
    alpha, xi, x = _col(p["shape"]), _col(p["xi"]), _GAMMA_X
    mean = x / (xi * x + 1 - xi)
    kl = -alpha[..., 0] * (1 - xi[..., 0]) * _cov(_GAMMA_W, 1 / x, mean)
    return kl / _cov(_GAMMA_W, x, x)


def _gamma_path(lam: np.ndarray, shape: Shape) -> Params:
    lam = np.asarray(lam, dtype=np.float64)
    return {"shape": 1.0 + lam, "xi": 1.0 / (1.0 + lam)}


MEASURES: dict[str, FamilyMeasure] = {
    m.family: m
    for m in (
        FamilyMeasure("gaussian", _gaussian_measure, _gaussian_path, (1,)),
        FamilyMeasure("beta", _beta_measure, _concentration_path("nu"), (1,)),
        FamilyMeasure("dirichlet", _dirichlet_measure, _concentration_path("nu"), (3,)),
        FamilyMeasure("vmf", _vmf_measure, _concentration_path("kappa"), (3,)),
        FamilyMeasure("von-mises", _von_mises_measure, _concentration_path("kappa"), (1,)),
        FamilyMeasure("categorical", _categorical_measure, _categorical_path, (1, 27), (1e-12, 1e12)),
        FamilyMeasure("wishart", _wishart_measure, _wishart_path, (2, 2)),
        FamilyMeasure("gamma", _gamma_measure, _gamma_path, (1,)),
    )
}


def register_measure(measure: FamilyMeasure) -> FamilyMeasure:
    """Make ``snr-matched`` and :func:`kl_snr` work for a custom family."""
    MEASURES[measure.family] = measure
    return measure


def resolve_shape(family: str, event_shape: Shape | None) -> Shape:
    if event_shape is None:
        return MEASURES[family].default_shape if family in MEASURES else (1,)
    return tuple(int(s) for s in event_shape)


def kl_snr(family: str, params: Params, event_shape: Shape | None = None) -> np.ndarray:
    """SNR_KL of each entry of the schedule arrays ``params`` (see the module docstring)."""
    if family not in MEASURES:
        raise KeyError(f"no KL-SNR measure for family {family!r}; known: {', '.join(sorted(MEASURES))}. "
                       "Register one with mstar_engine.schedules.kl_snr.register_measure")
    shape = resolve_shape(family, event_shape)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    return np.asarray(MEASURES[family].measure(arrays, shape), dtype=np.float64)
