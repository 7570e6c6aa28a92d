"""Dirichlet noise on the probability simplex (SS-DDPM §3.3 of the notes, MATH.md §4).

Marginal: q_t(x | x0) = Dir(α),  α_k = 1 + ν_t x0_k  over the last axis (K components; the event
may hold several simplices, shape (..., K)). Its mode is x0; ν = 0 is uniform on the simplex.

    log q_t(x | x0) = ν_t <x0, log x>  −  Ω_t(x0),   Ω_t(x0) = Σ_k lnΓ(α_k) − lnΓ(Σ_k α_k)

(density with respect to Lebesgue measure on the first K − 1 coordinates, as in scipy), so
T(x) = log x, A_t = ν_t, f(x0) = x0 and c_t(x) = 0.

Noise map (MATH.md §2, §4): stick-breaking, a bijection with K − 1 standard normals per simplex
(noise_shape (..., K − 1)). The fractions v_k = x_k / Σ_{j≥k} x_j, k = 0..K − 2, of a Dir(α) vector
are independent, v_k ~ Beta(α_k, β_k) with β_k = Σ_{j>k} α_j, and x_k = v_k Π_{j<k} (1 − v_j), the
last component taking what is left. Each fraction is its own Beta map, logit v_k =
logit F⁻¹_{α_k, β_k}(Φ(ξ_k)) (:mod:`mstar_engine.numerics.beta_map`), so ``to_noise`` is
exact and draws nothing: ξ_k = Φ⁻¹(F_{α_k, β_k}(v_k)) with logit v_k = log x_k − log Σ_{j>k} x_j
(a reverse cumulative logsumexp of log x). Working with logits and log x avoids the underflow of
tiny components (notes pitfall §8.4): log x_k = log v_k + Σ_{j<k} log(1 − v_j) is finite even
where x_k is below the float range. The Gaussian copula then has an exact density, the ``learned``
coupling applies and ρ = 1 is a deterministic map of the path.

Numerics: all maths runs in float64; for float32 x0 each stick's map stops at float32 precision
(|Δ logit v| ≲ 1e-8), and the coupled roll-out carries each solve's start down the chain (as Beta).
Samples are clamped below at the smallest normal number of the output dtype (a change of at most
K·tiny to the sum) so that log x stays finite.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.special import digamma
from torch import Tensor

from mstar_engine.families.base import Family, register, single_enough
from mstar_engine.families.beta import logits_along
from mstar_engine.numerics.quadrature import column, cov, logit_nodes
from mstar_engine.numerics.beta_map import beta_logit_icdf_normal, normal_from_beta_logit
from mstar_engine.numerics.special import compute_dtype, lgamma_bregman, log_ndtr


@register
class Dirichlet(Family):
    """Dir(1 + ν_t x0) over the last event axis; schedule ``nu`` (ν_t ≥ 0, length T + 1)."""

    name = "dirichlet"
    summary = "Dirichlet(1 + nu_t x0) on the probability simplex; T(x) = log x"
    domain = "simplex"
    schedule_params = ("nu",)
    schedules = ("dirichlet-exp",)
    has_chart = True
    kl_snr_shape = (3,)

    @staticmethod
    def kl_snr(params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """x0 ~ Dir(1, …, 1) (each coordinate Beta(1, K − 1)), g = x0: ν Cov(x, ψ(1 + ν x)) / Var x
        over one coordinate."""
        x, w = logit_nodes(1.0, shape[-1] - 1.0)
        nu = column(params["nu"])
        return nu[..., 0] * cov(w, x, digamma(1 + nu * x)) / cov(w, x, x)

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        super().__init__(event_shape, **schedule)
        if len(self.event_shape) == 0 or self.event_shape[-1] < 2:
            raise ValueError(f"dirichlet: the event shape must end with K >= 2 components, got {self.event_shape}")
        if not bool(torch.isfinite(self.nu).all()) or bool((self.nu < 0).any()):
            raise ValueError("dirichlet: the schedule nu must be finite and non-negative")

    @property
    def components(self) -> int:
        return self.event_shape[-1]

    # ------------------------------------------------------------------ parameters
    def _params(self, x0: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """(α, ν_t) in the compute dtype; α shaped like x0."""
        nu = self._at("nu", t, x0)
        return 1 + nu * x0.to(nu.dtype), nu

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (*self.event_shape[:-1], self.components - 1)

    # ------------------------------------------------------------------ noise maps
    def _sticks(self, x0: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """The Beta parameters (α_k, Σ_{j>k} α_j), k = 0..K − 2, of the stick-breaking fractions."""
        alpha, _ = self._params(x0, t)
        rest = alpha.flip(-1).cumsum(-1).flip(-1)[..., 1:]
        return alpha[..., :-1], rest

    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        a, b = self._sticks(x0, t)
        return self._from_logits(beta_logit_icdf_normal(xi.to(a.dtype), a, b, single=single_enough(x0)), x0.dtype)

    def from_noise_along(self, xi: Tensor, x0: Tensor, t: int,
                         before: tuple | None = None) -> tuple[Tensor, tuple | None]:
        """``from_noise`` down a coupled chain, each stick's solve started from the previous
        step's (:meth:`Beta.from_noise_along <mstar_engine.families.beta.Beta.from_noise_along>`,
        :func:`~mstar_engine.families.beta.logits_along`; the sticks' parameters are affine in ν
        too). Float64 x0: the plain map, no state."""
        if not single_enough(x0):
            return self.from_noise(xi, x0, t), None
        a, b = self._sticks(x0, t)
        dnu = float(self.nu[t]) - float(self.nu[t + 1]) if before is not None else 0.0
        u, state = logits_along(xi.to(a.dtype), a, b, dnu, before, lambda: self._sticks(x0, t + 1))
        return self._from_logits(u, x0.dtype), state

    @staticmethod
    def _from_logits(u: Tensor, dtype: torch.dtype) -> Tensor:
        """The point of the simplex whose stick-breaking fractions have logits ``u``."""
        log_rest = torch.cumsum(-torch.nn.functional.softplus(u), -1)  # Σ_{j≤k} log(1 − v_j)
        before = torch.cat([torch.zeros_like(u[..., :1]), log_rest[..., :-1]], -1)
        log_x = torch.cat([before - torch.nn.functional.softplus(-u), log_rest[..., -1:]], -1)
        return _to_simplex(log_x, dtype)

    def sample(self, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """Independent draw (no noise map): K Gammas from torch's sampler, normalised; α ≥ 1 so
        the draws cannot underflow. Same law as ``from_noise`` of standard normal noise."""
        alpha, _ = self._params(x0, t)
        return _to_simplex(torch.log(torch._standard_gamma(alpha, generator=generator)), x0.dtype)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        a, b = self._sticks(x0, t)
        log_x = torch.log(x.to(a.dtype))
        log_tail = torch.logcumsumexp(log_x.flip(-1), -1).flip(-1)  # log Σ_{j≥k} x_j
        return normal_from_beta_logit(log_x[..., :-1] - log_tail[..., 1:], a, b).to(x.dtype)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        """The additive log-ratio chart: softmax(log x + (v, 0)) over each simplex."""
        log_x = torch.log(x.to(compute_dtype(x.device)))
        return _to_simplex(log_x + torch.nn.functional.pad(v.to(log_x.dtype), (0, 1)), x.dtype)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        alpha, _ = self._params(x0, t)
        lp = ((alpha - 1) * torch.log(x.to(alpha.dtype))).sum(-1) - _log_multi_beta(alpha)
        return lp.reshape(x.shape[0], -1).sum(1).to(x.dtype)

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL(Dir(α) ‖ Dir(α̂)) = Σ_k D(α̂_k, α_k) − D(Σ α̂, Σ α), summed over the event, with
        D(b, a) = lnΓ(b) − lnΓ(a) − (b − a)ψ(a) (:func:`special.lgamma_bregman`).

        This equals lnΓ(Σα) − lnΓ(Σα̂) + Σ_k [lnΓ(α̂_k) − lnΓ(α_k) + (α_k − α̂_k)(ψ(α_k) − ψ(Σα))]
        for any two Dirichlets; on the simplex Σα = Σα̂ = ν + K and the last term vanishes.
        """
        alpha, _ = self._params(x0, t)
        alpha_hat, _ = self._params(x0_hat, t)
        kl = lgamma_bregman(alpha_hat, alpha).sum(-1) - lgamma_bregman(alpha_hat.sum(-1), alpha.sum(-1))
        return kl.reshape(x0.shape[0], -1).sum(1).clamp(min=0.0).to(x0_hat.dtype)

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL / (ν_t + K): the KL divided by the total concentration Σ α (Beta's ν + 2 at K = 2)."""
        conc = self._at("nu", t, x0).reshape(-1) + self.components
        return (self.kl(x0, x0_hat, t) / conc).to(x0_hat.dtype)

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """ν_t · log x."""
        nu = self._at("nu", t, x)
        return (nu * torch.log(x.to(nu.dtype))).to(x.dtype)

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t(x0) = Σ_k lnΓ(1 + ν_t x0_k) − lnΓ(Σ_k (1 + ν_t x0_k)), summed over simplices."""
        alpha, _ = self._params(x0, t)
        return _log_multi_beta(alpha).reshape(x0.shape[0], -1).sum(1).to(x0.dtype)

    # ------------------------------------------------------------------ prior, head, domain
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Dir(1, …, 1), uniform on the simplex (q_T as ν_T → 0): normalised Exp(1) variates,
        E = −log Φ(−ξ), drawn as log E to keep every component positive."""
        xi = torch.randn((n, *self.event_shape), generator=generator, device=device, dtype=compute_dtype(device))
        return _to_simplex(torch.log(-log_ndtr(-xi)), dtype)

    def head(self, raw: Tensor) -> Tensor:
        """softmax over the last axis."""
        return torch.softmax(raw, dim=-1)

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        self._check_finite(x, what)
        if x.ndim == 0 or x.shape[-1] != self.components:
            raise self._domain_error(what, f"the last axis has {x.shape[-1] if x.ndim else 0} components, "
                                     f"expected K = {self.components}")
        negative = x < 0
        if bool(negative.any()):
            raise self._domain_error(what, f"{int(negative.sum())} of {x.numel()} components are negative "
                                     f"(min {float(x.min()):.4g})")
        tol = max(1e-5, 16 * self.components * torch.finfo(x.dtype).eps)
        err = (x.sum(-1) - 1).abs()
        if bool((err > tol).any()):
            raise self._domain_error(what, f"{int((err > tol).sum())} of {err.numel()} vectors do not sum to 1 "
                                     f"(largest |sum − 1| = {float(err.max()):.3g} > {tol:.1g}); "
                                     "normalise along the last axis")


def _to_simplex(log_g: Tensor, dtype: torch.dtype) -> Tensor:
    """softmax(log G) over the last axis, cast to ``dtype`` and floored at its smallest normal."""
    return torch.softmax(log_g, dim=-1).to(dtype).clamp(min=torch.finfo(dtype).tiny)


def _log_multi_beta(alpha: Tensor) -> Tensor:
    """ln B(α) = Σ_k lnΓ(α_k) − lnΓ(Σ_k α_k) over the last axis."""
    return torch.lgamma(alpha).sum(-1) - torch.lgamma(alpha.sum(-1))
