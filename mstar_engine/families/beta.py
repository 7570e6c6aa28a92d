"""Beta noise on the open unit box (SS-DDPM §3.2 of the notes, MATH.md §4).

Marginal, per coordinate:  q_t(x | x0) = Beta(α, β),  α = 1 + ν_t x0,  β = 1 + ν_t (1 − x0).
Its mode is x0; ν → ∞ concentrates at x0 and ν = 0 is uniform. As an exponential family,

    log q_t(x | x0) = ν_t x0 · logit x  −  ln B(α, β)  +  ν_t log(1 − x),

so T(x) = logit x, A_t = ν_t, f(x0) = x0, Ω_t(x0) = ln B(α, β), c_t(x) = ν_t log(1 − x).

Noise map (MATH.md §2, §4): the bijection x = F⁻¹_{α,β}(Φ(ξ)), one standard normal per coordinate
(noise_shape = event_shape), computed in logit space, u = logit x
(:func:`~mstar_engine.numerics.beta_map.beta_logit_icdf_normal`: regularised incomplete beta
by its continued fraction, safeguarded Halley inverse, each tail solved where it keeps precision).
``to_noise`` is its exact inverse, ξ = Φ⁻¹(F_{α,β}(x)) from u = log x − log(1 − x), and draws
nothing, so the Gaussian copula has an exact density, the ``learned`` coupling applies (Monte Carlo
kernel KL) and ρ = 1 is a deterministic map of the path. (The former map, two Gamma inverse CDFs
with an auxiliary Gamma total in the inverse, is kept as a reference in
``benchmarks/tail_construction.py``.)

Numerics: all maths runs in float64 (:func:`special.compute_dtype`); for float32 x0 the noise map
stops at float32 precision (|Δ logit x| ≲ 1e-8), and the coupled roll-out carries each solve's start
down the chain (:meth:`Beta.from_noise_along`). Samples and head outputs are
clamped into the open interval representable in the output dtype, [tiny, 1 − eps/2] (float32:
[1.2e-38, 1 − 6e-8]); this moves only draws that would otherwise round onto 0 or 1, which for
float32 happens in the far tails at ν ≳ 1e7 or for x0 within ~1e-7 of the boundary. The statistic
logit x is then finite (|logit x| ≤ 87 in float32, 708 in float64).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.special import digamma
from torch import Tensor

from mstar_engine.families.base import Family, register, single_enough
from mstar_engine.numerics.beta_map import (beta_logit_icdf_normal, beta_logit_icdf_normal_single,
                                            normal_from_beta_logit)
from mstar_engine.numerics.quadrature import column, cov, logit_nodes
from mstar_engine.numerics.special import compute_dtype, lgamma_bregman, open_unit


_KL_X, _KL_W = logit_nodes(1.5, 1.5)  # the KL-SNR reference x0 ~ Beta(1.5, 1.5)
#: ν above which :meth:`Beta.from_noise_along` does not carry its start along the chain.
CHAIN_NU_MAX = 1000.0


def logits_along(xi: Tensor, a: Tensor, b: Tensor, dnu: float, before: tuple | None,
                 previous) -> tuple[Tensor, tuple]:
    """u = logit F⁻¹_{a,b}(Φ(ξ)) to float32 precision for one step of a chain whose parameters a, b
    are affine in ν (Beta; Dirichlet's sticks), and the state to carry to the next step.

    ``before``: (ξ_{t+1}, state) of the previous step, or None to start afresh; ``previous()``
    gives that step's (a, b); ``dnu`` = ν_t − ν_{t+1}. The solve starts from the previous u moved to
    ξ_t by :func:`~mstar_engine.numerics.beta_map.chain_start` plus ``dnu``·D, D ≈ ∂u/∂ν learned from
    how far the previous solve moved from its own such guess. The state is (u_t, log p_U(u_t), D):
    float64, float32, float32. The start changes only the work, not the result."""
    guess, slope = None, None
    if before is not None:
        xi_prev, (u_prev, lpu_prev, slope) = before
        guess = (u_prev, lpu_prev, xi_prev, *previous(), dnu * slope)
    u, lpu, start = beta_logit_icdf_normal_single(xi, a, b, guess)
    if guess is not None and dnu != 0.0:  # D at step t: the part of u_t − u_{t+1} the ξ-series did not explain
        slope = slope + ((u - start) / dnu).float()
    else:
        slope = torch.zeros_like(u, dtype=torch.float32)
    return u, (u, lpu, slope)


@register
class Beta(Family):
    """Beta(1 + ν_t x0, 1 + ν_t (1 − x0)) per coordinate; schedule ``nu`` (ν_t ≥ 0, length T + 1)."""

    name = "beta"
    summary = "Beta(1 + nu_t x0, 1 + nu_t (1 - x0)) per coordinate on (0,1)^d; T(x) = logit x"
    domain = "unit-box"
    schedule_params = ("nu",)
    coordinatewise = True
    schedules = ("beta-cosine",)

    @classmethod
    def pseudo_step(cls, params: dict[str, np.ndarray]) -> dict[str, float]:
        """ν_0 = ν_1 + 2. The published pseudo step has total concentration ν_1 + 4 (code
        parameterisation n = ν + 2); here the total is ν + 2: slightly sharper than step 1, mode x0."""
        return {"nu": float(params["nu"][0] + 2.0)}

    @staticmethod
    def kl_snr(params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """x0 ~ Beta(1.5, 1.5) (std 1/4, image-like), Gaussian coordinates g = 2 x0 − 1 (the [−1, 1]
        image convention): ν Cov(x0, ψ(1 + ν x0) − ψ(1 + ν(1 − x0))) / (4 Var x0)."""
        nu, x = column(params["nu"]), _KL_X
        diff = digamma(1 + nu * x) - digamma(1 + nu * (1 - x))
        return nu[..., 0] * cov(_KL_W, x, diff) / (4 * cov(_KL_W, x, x))

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        super().__init__(event_shape, **schedule)
        if not bool(torch.isfinite(self.nu).all()) or bool((self.nu < 0).any()):
            raise ValueError("beta: the schedule nu must be finite and non-negative")

    # ------------------------------------------------------------------ parameters
    def _params(self, x0: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """(α, β, ν_t) in the compute dtype, shaped like x0."""
        nu = self._at("nu", t, x0)
        x0 = x0.to(nu.dtype)
        return 1 + nu * x0, 1 + nu * (1 - x0), nu

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """The map in float64, to float32 precision only (|Δ logit x| ≲ 1e-8) for float32 (or
        narrower) x0, whose output cannot hold more."""
        a, b, _ = self._params(x0, t)
        u = beta_logit_icdf_normal(xi.to(a.dtype), a, b, single=single_enough(x0))
        return open_unit(torch.sigmoid(u).to(x0.dtype))

    def from_noise_along(self, xi: Tensor, x0: Tensor, t: int,
                         before: tuple | None = None) -> tuple[Tensor, tuple | None]:
        """``from_noise(xi, x0, t)`` for a chain t = T, T − 1, … of correlated noise (the coupled
        roll-out): ``before`` is (ξ_{t+1}, state) with the state this returned at step t + 1 for the
        same examples (None: no start to carry). Returns (x, state); the state is None where there
        is nothing to carry (float64 x0: the plain map).

        Each solve starts from the previous step's (:func:`logits_along`); mid-chain that start is
        within ~1e-3 and one CDF evaluation per element is enough. Steps with ν_t >
        :data:`CHAIN_NU_MAX` (the first few, where ν changes by a factor up to 3 per step) start
        from Boost's float32 inverse instead."""
        if not single_enough(x0):
            return self.from_noise(xi, x0, t), None
        a, b, _ = self._params(x0, t)
        carry = before is not None and float(self.nu[t]) <= CHAIN_NU_MAX

        def previous() -> tuple[Tensor, Tensor]:
            x0f, nu = x0.float(), float(self.nu[t + 1])  # the guess is computed in float32
            return 1 + nu * x0f, 1 + nu * (1 - x0f)

        u, state = logits_along(xi.to(a.dtype), a, b, float(self.nu[t]) - float(self.nu[t + 1]) if carry else 0.0,
                                before if carry else None, previous)
        return open_unit(torch.sigmoid(u).to(x0.dtype)), state

    def sample(self, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """Independent draw (no noise map): torch's Gamma sampler, x = G_a / (G_a + G_b); α, β ≥ 1
        so the draws cannot underflow. Same law as ``from_noise`` of standard normal noise."""
        a, b, _ = self._params(x0, t)
        ga = torch._standard_gamma(a, generator=generator)
        gb = torch._standard_gamma(b, generator=generator)
        return open_unit(torch.sigmoid(torch.log(ga) - torch.log(gb)).to(x0.dtype))

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """ξ = Φ⁻¹(F_{α,β}(x)), exact and deterministic (``generator`` is not used)."""
        a, b, _ = self._params(x0, t)
        xd = x.to(a.dtype)
        return normal_from_beta_logit(torch.log(xd) - torch.log1p(-xd), a, b).to(x.dtype)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        a, b, _ = self._params(x0, t)
        x = x.to(a.dtype)
        lp = (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-x) - _log_beta_fn(a, b)
        return lp.flatten(1).sum(1).to(x0.dtype)

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL(Beta(α, β) ‖ Beta(α̂, β̂)) = D(α̂, α) + D(β̂, β) − D(α̂ + β̂, α + β), summed over the
        event, with D(b, a) = lnΓ(b) − lnΓ(a) − (b − a)ψ(a) (:func:`special.lgamma_bregman`).

        Here α + β = α̂ + β̂ = ν + 2, so this is ln B(α̂, β̂) − ln B(α, β) + ν (x0 − x̂0)(ψ(α) − ψ(β)).
        """
        a, b, _ = self._params(x0, t)
        ah, bh, _ = self._params(x0_hat, t)
        kl = lgamma_bregman(ah, a) + lgamma_bregman(bh, b) - lgamma_bregman(ah + bh, a + b)
        return kl.flatten(1).sum(1).clamp(min=0.0).to(x0_hat.dtype)

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL / (ν_t + 2): the KL divided by the total concentration α + β (the SS-DDPM CIFAR loss)."""
        conc = self._at("nu", t, x0).reshape(-1) + 2
        return (self.kl(x0, x0_hat, t) / conc).to(x0_hat.dtype)

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """ν_t · logit x."""
        nu = self._at("nu", t, x)
        xd = x.to(nu.dtype)
        return (nu * (torch.log(xd) - torch.log1p(-xd))).to(x.dtype)

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t(x0) = Σ ln B(1 + ν_t x0, 1 + ν_t (1 − x0))."""
        a, b, _ = self._params(x0, t)
        return _log_beta_fn(a, b).flatten(1).sum(1).to(x0.dtype)

    # ------------------------------------------------------------------ prior, head, domain
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Beta(1, 1) = uniform on (0, 1)^d, the limit of q_T as ν_T → 0."""
        u = torch.rand((n, *self.event_shape), generator=generator, device=device, dtype=compute_dtype(device))
        return open_unit(u.to(dtype))

    def project(self, x0: Tensor) -> Tensor:
        eps = 1e-6
        return x0.clamp(eps, 1 - eps)

    def head(self, raw: Tensor) -> Tensor:
        """sigmoid, clamped into the open interval of the dtype."""
        return open_unit(torch.sigmoid(raw))

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        self._check_finite(x, what)
        bad = (x <= 0) | (x >= 1)
        if bool(bad.any()):
            raise self._domain_error(
                what, f"{int(bad.sum())} of {x.numel()} values lie outside the open interval (0, 1) "
                f"(min {float(x.min()):.4g}, max {float(x.max()):.4g}); rescale the data into (0, 1), "
                "e.g. (k + 0.5) / 256 for 8-bit pixels, or clip to [1e-4, 1 − 1e-4]")


def _log_beta_fn(a: Tensor, b: Tensor) -> Tensor:
    """ln B(a, b) = lnΓ(a) + lnΓ(b) − lnΓ(a + b)."""
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
