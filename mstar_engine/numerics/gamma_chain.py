"""The Gamma noise map y = log F_a⁻¹(Φ(ξ)) down a coupled chain, to float32 precision (issue #17).

Along the coupled roll-out the noise ξ of one step is ρ·ξ of the step before plus a little fresh
noise, and the shape a changes slowly, so the previous step's y is a close start: moved to the new
ξ by the Taylor series of y(ξ) to third order (:func:`chain_start`; at fixed a,
y′ = φ(ξ)/p(y), y″ = y′(−ξ − l′y′), y‴ = y″(−ξ − l′y′) − y′(1 + l″y′² + l′y″) with
l(y) = a y − e^y − lnΓ(a) the log density of log X, l′ = a − e^y, l″ = −e^y), plus the shift the
caller adds for the change of a. From that start Halley steps (one incomplete gamma per element
each) are taken; mid-chain one is enough. Halley converges cubically, e₁ ≈ K e₀³ with K ≈ 10 and the step about e₀,
(K grows like a: log X has spread 1/√a), so a step of at most :data:`SINGLE_STEP`·max(a, 1)^(−1/3)
leaves |Δy| ≲ 1e-9: x = e^{y − log rate} is then within
one float32 ulp of the float64 map. Elements not settled after :data:`SINGLE_ITERS` steps, or
beyond ±:data:`DEEP_Z`, are computed by the float64 map (:func:`~mstar_engine.numerics.special.gamma_log_icdf_normal`).
"""
from __future__ import annotations

import math

import torch
from scipy.special import digamma
from torch import Tensor

from mstar_engine.numerics.special import gamma_log_icdf_normal, gamma_log_tail, log_ndtr, log_normal_pdf

#: The largest Halley step (in y = log x, at shapes a ≤ 1; ÷ a^(1/3) above) taken as converged for
#: float32 outputs.
SINGLE_STEP = 5e-4
#: |y| beyond which the float64 map recomputes an element (e^y is near float64's range there).
Y_MAX = 700.0
#: |log a_t − log a_{t+1}| below which :func:`log_gamma_along` does not learn ∂y/∂log a: the miss
#: of the start is then mostly the ξ-series' (ρ_t < 1), not the shape's.
LEARN_DLOG = 1e-3
#: Most Halley steps before the float64 map takes over an element.
SINGLE_ITERS = 3
#: |ξ| beyond which the float64 map computes the element (its tail probabilities near underflow).
DEEP_Z = 30.0


def _derivatives(y: Tensor, xi: Tensor, a: float) -> tuple[Tensor, Tensor, Tensor]:
    """(y′, y″, y‴) of y(ξ) at fixed a, in float32; y′ from float64 (a·y and lnΓ(a) cancel)."""
    d1 = torch.exp(log_normal_pdf(xi.to(y.dtype)) - (a * y - torch.exp(y) - math.lgamma(a))).float()
    y, xi = y.float(), xi.float()
    ey = torch.exp(y)
    l1, l2 = a - ey, -ey
    w = -xi - l1 * d1
    d2 = d1 * w
    return d1, d2, d2 * w - d1 * (1 + l2 * d1 * d1 + l1 * d2)


def chain_start(y: Tensor, xi: Tensor, xi_new: Tensor, a: float, slope: Tensor,
                dlog_a: float) -> tuple[Tensor, Tensor]:
    """A guess of y at (``xi_new``, a·e^``dlog_a``) from its value ``y`` at (``xi``, a), and
    ∂y/∂log a at ``xi_new``: the third-order Taylor series in ξ, plus dlog_a·D with D = ``slope`` (an
    estimate of ∂y/∂log a at ξ; log a, as y ≈ log a + O(a^(−1/2)) makes D nearly constant) moved to
    ``xi_new`` by ∂²y/∂ξ∂log a = −y′(a(y − ψ(a)) + l′·D). The increment in float32, added to y."""
    dx = (xi_new - xi).float()
    d1, d2, d3 = _derivatives(y, xi, a)
    yf = y.float()
    moved = slope - dx * d1 * (a * (yf - float(digamma(a))) + (a - torch.exp(yf)) * slope)
    return y + (dx * (d1 + dx * (0.5 * d2 + dx * d3 / 6)) + dlog_a * moved), moved


def _halley_step(y: Tensor, xi: Tensor, a: float, lga1: float) -> tuple[Tensor, Tensor]:
    """The Halley step for g(y) = sign·(log F(y) − log Φ(−|ξ|)), F the smaller tail (lower for
    ξ ≤ 0), one incomplete gamma per element (g′ = x p(x)/F, g″ = g′(a − x − sign·g′)), and
    whether it settles the element."""
    upper = xi > 0
    at = torch.full_like(y, a)
    log_f = gamma_log_tail(y, at, upper, torch.full_like(y, lga1))
    sign = torch.where(upper, -1.0, 1.0).to(y.dtype)
    g = sign * (log_f - log_ndtr(-xi.abs()))
    ey = torch.exp(y)
    d1 = torch.exp(a * y - ey - (lga1 - math.log(a)) - log_f)
    newton = g / d1
    den = 1 - 0.5 * newton * (a - ey - sign * d1)
    step = newton / den.clamp(min=0.5, max=2.0)
    # settled: a small, true Halley step (a clamped one is a damped Newton step, not cubic)
    return step, (step.abs() <= SINGLE_STEP / max(a, 1.0) ** (1 / 3)) & (den >= 0.5) & (den <= 2.0)


def gamma_log_icdf_normal_single(xi: Tensor, a: float, start: Tensor) -> Tensor:
    """y = log F_a⁻¹(Φ(ξ)) for Gamma(a, 1) to float32 precision (|Δy| ≲ 1e-9) from ``start`` (float64
    tensors of one shape; a a number): Halley steps, each on the elements whose last step was above
    :data:`SINGLE_STEP`, at most :data:`SINGLE_ITERS`; elements left over (and those beyond ±DEEP_Z)
    come from the float64 map. Not differentiable."""
    xi, y = xi.detach().to(torch.float64), start.detach().to(torch.float64).clone()
    lga1 = math.lgamma(a + 1)
    step, settled = _halley_step(y, xi, a, lga1)  # the first on every element, without gathers
    y -= step
    todo = torch.nonzero((~settled & (xi.abs() <= DEEP_Z)).view(-1)).squeeze(1)
    flat_y, flat_xi = y.view(-1), xi.reshape(-1)
    for _ in range(SINGLE_ITERS - 1):
        if todo.numel() == 0:
            break
        step, settled = _halley_step(flat_y[todo], flat_xi[todo], a, lga1)
        flat_y[todo] -= step
        todo = todo[~settled]
    redo = (xi.abs() > DEEP_Z) | ~(y.abs() <= Y_MAX)  # (a start far off can stall where exp under/overflows)
    redo.view(-1)[todo] = True
    if bool(redo.any()):
        y[redo] = gamma_log_icdf_normal(xi[redo], torch.full_like(xi[redo], a))
    return y


def log_gamma_along(xi: Tensor, a: float, a_prev: float, before: tuple | None) -> tuple[Tensor, tuple]:
    """y = log F_a⁻¹(Φ(ξ)) for one step of a chain t = T, T − 1, … (Gamma(a, 1) at step t, a_prev at
    step t + 1), and the state to carry: ``before`` is (ξ_{t+1}, state of step t + 1) or None (the
    float64 map). From a carried start (:func:`chain_start`, the shape's move with D ≈ ∂y/∂log a
    learned from how far the previous solve moved from its own start) the float32-precision solve.
    The state is (y float64, D float32)."""
    xi = xi.to(torch.float64)
    if before is None:
        y = gamma_log_icdf_normal(xi, torch.full_like(xi, a))
        return y, (y, torch.zeros_like(xi, dtype=torch.float32))
    xi_prev, (y_prev, slope) = before
    dlog = math.log(a / a_prev)
    start, slope = chain_start(y_prev, xi_prev, xi, a_prev, slope, dlog)
    y = gamma_log_icdf_normal_single(xi, a, start)
    if abs(dlog) >= LEARN_DLOG:
        slope = slope + ((y - start) / dlog).float()
    return y, (y, slope)
