"""Gamma noise on the positive reals (SS-DDPM paper Table 6, notes §3.7, MATH.md §4).

Marginal, per coordinate: q_t(x | x0) = Gamma(shape α_t, rate β_t(x0)),

    β_t(x0) = α_t (ξ_t + (1 − ξ_t) / x0),      mean 1 / (ξ_t + (1 − ξ_t)/x0): x0 at ξ = 0, 1 at ξ = 1.

    log q_t(x | x0) = −α_t(1 − ξ_t) x / x0  −  Ω_t(x0)  +  c_t(x),
    Ω_t(x0) = −α_t log β_t(x0),   c_t(x) = (α_t − 1) log x − α_t ξ_t x − lnΓ(α_t),

so T(x) = x, A_t = α_t (1 − ξ_t), f(x0) = −1/x0 (the b_t term −α_t ξ_t x does not depend on x0).

Noise map (MATH.md §2): one standard normal per coordinate through Φ and the Gamma(α_t) inverse
CDF, divided by the rate: x = F_{α_t}^{-1}(Φ(ξ)) / β_t(x0). A per-coordinate bijection, so
``to_noise`` is deterministic (``inverse_uses_aux = False``) and the Monte Carlo copula kernel KL
applies. The Gamma variate is computed as a log-variate, so small shapes (α ≪ 1) are fine.
``sample`` (the star-shaped draws) skips the inverse CDF: torch's Gamma sampler, in log space.

Prior: Gamma(α_T, rate α_T), mean 1. This is q_T(· | x0 = 1) exactly, and q_T(· | x0) for every
x0 when ξ_T = 1; data should be scaled so that x0 is of order 1 (the head's floor assumes it too).

Numerics: float64 inside; samples are clamped into [tiny, max] of the output dtype (only draws
that would underflow, e.g. shapes α ≲ 0.01 in float32).
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mstar_engine.families.base import Family, register, single_enough
from mstar_engine.numerics.direct_samplers import log_standard_gamma
from mstar_engine.numerics.gamma_chain import log_gamma_along
from mstar_engine.numerics.quadrature import column, cov, log_nodes
from mstar_engine.numerics.special import compute_dtype, gamma_log_icdf_normal, normal_from_gamma_log


_KL_X, _KL_W = log_nodes(4.0, 4.0)  # the KL-SNR reference x0 ~ Gamma(4, rate 4)


@register
class Gamma(Family):
    """Gamma(α_t, α_t(ξ_t + (1 − ξ_t)/x0)) per coordinate; schedules ``shape`` (α_t > 0) and
    ``xi`` (ξ_t in [0, 1]), each of length T + 1."""

    name = "gamma"
    summary = "Gamma(shape alpha_t, rate alpha_t (xi_t + (1 - xi_t)/x0)) per coordinate on (0,inf)^d; T(x) = x"
    domain = "positive"
    schedule_params = ("shape", "xi")
    coordinatewise = True
    schedules, custom_fill = ("gamma-exp",), "gamma-exp"

    @staticmethod
    def kl_snr(params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """x0 ~ Gamma(4, rate 4) (mean 1, std 1/2), g = x0: −α(1 − ξ) Cov(x0/(ξ x0 + 1 − ξ), 1/x0) / Var x0."""
        alpha, xi, x = column(params["shape"]), column(params["xi"]), _KL_X
        kl = -alpha[..., 0] * (1 - xi[..., 0]) * cov(_KL_W, 1 / x, x / (xi * x + 1 - xi))
        return kl / cov(_KL_W, x, x)

    @staticmethod
    def kl_snr_path(lam: np.ndarray, shape: tuple[int, ...]) -> dict:
        """α = 1 + λ, ξ = 1/(1 + λ)."""
        lam = np.asarray(lam, dtype=np.float64)
        return {"shape": 1.0 + lam, "xi": 1.0 / (1.0 + lam)}
    #: Lower bound added by the head: x̂0 = softplus(raw) + head_floor.
    head_floor: ClassVar[float] = 1e-4

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        super().__init__(event_shape, **schedule)
        if not bool(torch.isfinite(self.shape).all()) or bool((self.shape <= 0).any()):
            raise ValueError("gamma: the schedule 'shape' must be finite and positive")
        if bool(((self.xi < 0) | (self.xi > 1)).any()):
            raise ValueError("gamma: the schedule 'xi' must lie in [0, 1]")

    # ------------------------------------------------------------------ parameters
    def _schedule(self, t: Tensor | int, like: Tensor) -> tuple[Tensor, Tensor]:
        """(α_t, ξ_t) in the compute dtype, shaped (B, 1, ..., 1) against ``like``."""
        return self._at("shape", t, like), self._at("xi", t, like)

    def _params(self, x0: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """(α_t, ξ_t, log β_t(x0)) in the compute dtype."""
        alpha, xi = self._schedule(t, x0)
        x0 = x0.to(alpha.dtype)
        log_rate = torch.log(alpha) + torch.log(xi + (1 - xi) / x0)
        return alpha, xi, log_rate

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        alpha, _, log_rate = self._params(x0, t)
        log_x = gamma_log_icdf_normal(xi.to(alpha.dtype), alpha.expand_as(log_rate)) - log_rate
        return _from_log(log_x, x0.dtype)

    def from_noise_along(self, xi: Tensor, x0: Tensor, t: int,
                         before: tuple | None = None) -> tuple[Tensor, tuple | None]:
        """``from_noise(xi, x0, t)`` for a chain t = T, T − 1, … of correlated noise (the coupled
        roll-out; ``before`` as in :meth:`Beta.from_noise_along
        <mstar_engine.families.beta.Beta.from_noise_along>`). For float32 x0 the log Gamma variate
        y = log F_α⁻¹(Φ(ξ)), which does not depend on x0, starts from the previous step's
        (:func:`~mstar_engine.numerics.gamma_chain.log_gamma_along`); mid-chain one Halley step
        brings it to float32 precision. Float64 x0: the plain map, no state."""
        if not single_enough(x0):
            return self.from_noise(xi, x0, t), None
        _, _, log_rate = self._params(x0, t)
        a_prev = float(self.shape[t + 1]) if before is not None else math.nan
        y, state = log_gamma_along(xi, float(self.shape[t]), a_prev, before)
        return _from_log(y - log_rate, x0.dtype), state

    def sample(self, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """Direct draw (the law of ``from_noise`` of standard normal noise, without its inverse CDF):
        log x = log G − log β_t(x0), G ~ Gamma(α_t, 1) from ``generator`` (log space below α = 1)."""
        alpha, _, log_rate = self._params(x0, t)
        log_x = log_standard_gamma(alpha.expand_as(log_rate), generator) - log_rate
        return _from_log(log_x, x0.dtype)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        alpha, _, log_rate = self._params(x0, t)
        log_g = torch.log(x.to(alpha.dtype)) + log_rate
        return normal_from_gamma_log(log_g, alpha.expand_as(log_g)).to(x.dtype)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        alpha, _, log_rate = self._params(x0, t)
        x = x.to(alpha.dtype)
        lp = alpha * log_rate - torch.lgamma(alpha) + (alpha - 1) * torch.log(x) - torch.exp(log_rate) * x
        return lp.flatten(1).sum(1).to(x0.dtype)

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL = α_t [log(β/β̂) + β̂/β − 1] = α_t (d − log(1 + d)), d = β̂/β − 1
        = (1 − ξ_t)(x0 − x̂0) / (x̂0 (ξ_t x0 + 1 − ξ_t)), summed over the event.

        For |d| < 1e-3 the series d²/2 − d³/3 + d⁴/4 − d⁵/5 replaces the cancelling difference.
        """
        alpha, xi = self._schedule(t, x0)
        x0d, xh = x0.to(alpha.dtype), x0_hat.to(alpha.dtype)
        d = (1 - xi) * (x0d - xh) / (xh * (xi * x0d + 1 - xi))
        return (alpha * _d_minus_log1p(d)).flatten(1).sum(1).to(x0_hat.dtype)

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL / α_t = Σ (d − log(1 + d)): the per-step scale-free part (as Wishart's KL / n_t)."""
        alpha, xi = self._schedule(t, x0)
        x0d, xh = x0.to(alpha.dtype), x0_hat.to(alpha.dtype)
        d = (1 - xi) * (x0d - xh) / (xh * (xi * x0d + 1 - xi))
        return _d_minus_log1p(d).flatten(1).sum(1).to(x0_hat.dtype)

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """A_t T(x) = α_t (1 − ξ_t) x."""
        alpha, xi = self._schedule(t, x)
        return (alpha * (1 - xi) * x.to(alpha.dtype)).to(x.dtype)

    def features(self, x0: Tensor) -> Tensor:
        """f(x0) = −1/x0."""
        return -1 / x0

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t(x0) = −Σ α_t log β_t(x0) (the x0-free lnΓ(α_t) is left in c_t(x))."""
        alpha, _, log_rate = self._params(x0, t)
        return (-alpha * log_rate).flatten(1).sum(1).to(x0.dtype)

    # ------------------------------------------------------------------ prior, head, domain
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Gamma(α_T, rate α_T) = q_T(· | x0 = 1)."""
        noise = torch.randn((n, *self.event_shape), generator=generator, device=device, dtype=compute_dtype(device))
        return self.from_noise(noise, torch.ones((n, *self.event_shape), device=device, dtype=dtype), self.steps)

    def project(self, x0: Tensor) -> Tensor:
        return x0.clamp(min=1e-8)

    def head(self, raw: Tensor) -> Tensor:
        """softplus(raw) + head_floor (strictly positive, finite for finite raw)."""
        return F.softplus(raw) + self.head_floor

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        self._check_finite(x, what)
        bad = x <= 0
        if bool(bad.any()):
            raise self._domain_error(what, f"{int(bad.sum())} of {x.numel()} values are ≤ 0 "
                                     f"(min {float(x.min()):.4g}); shift or transform the data to be positive")


def _d_minus_log1p(d: Tensor) -> Tensor:
    """d − log(1 + d) ≥ 0 for d > −1, with a series near 0."""
    small = d.abs() < 1e-3
    ds = torch.where(small, d, torch.zeros_like(d))
    series = ds * ds * (0.5 - ds * (1 / 3 - ds * (0.25 - ds / 5)))
    dl = torch.where(small, torch.ones_like(d), d)
    return torch.where(small, series, dl - torch.log1p(dl)).clamp(min=0.0)


def _from_log(log_x: Tensor, dtype: torch.dtype) -> Tensor:
    """x = exp(log x) in ``dtype``, clamped into its positive finite range."""
    info = torch.finfo(dtype)
    return torch.exp(log_x).to(dtype).clamp(min=info.tiny, max=info.max)
