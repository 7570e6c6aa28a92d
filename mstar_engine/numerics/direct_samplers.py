"""Exact direct samplers for the star-shaped draws x_t ~ q_t(· | x0) (issue #17): the laws that the
families' noise maps give standard normal noise, drawn without those maps' inverse CDFs.

* :func:`log_standard_gamma` — log G for G ~ Gamma(α, 1) (Gamma and Wishart families): torch's
  Marsaglia–Tsang sampler ``torch._standard_gamma``; for α < 1 the shape is boosted,
  G = G' U^{1/α} with G' ~ Gamma(α + 1) and U uniform on (0, 1], and the result kept in log space,
  so that draws of tiny shapes, which underflow as G (torch clamps them to the smallest normal
  number), are exact as log G.
* :func:`von_mises_offset` — θ ~ VM(0, κ) on [−π, π] (von Mises family): the Best–Fisher (1979)
  rejection sampler from a wrapped Cauchy envelope, vectorised; each round redraws only the
  elements still pending, in cache-sized blocks, with two uniforms per attempt (U₁ = |2V − 1| and
  the sign of θ from that of 2V − 1). The envelope parameter r = (1 + ρ²)/(2ρ) with
  ρ = 2κ/(τ + √(2τ)), τ = 1 + √(1 + 4κ²) (the usual (τ − √(2τ))/(2κ) rationalised, no cancellation
  for small κ), and r = 1/κ + κ below κ = 1e-5 as ``torch.distributions.VonMises``. The
  acceptance test is exact for every r > 1 (r only sets the acceptance rate, ≥ ~66%). Written
  with z = cos πU₁ = cos² h − sin² h (h = πU₁/2), every quantity is free of cancellation:
  r + z = (r − 1) + 2cos² h, c = κ(r² − 1)/(r + z) and |θ| = arccos f = 2 atan2(√(r − 1) sin h,
  √(r + 1) cos h), f = (1 + rz)/(r + z), so large κ (θ ~ κ^{-1/2}) keeps full relative precision.

Every draw comes from the ``generator`` passed in (torch's own samplers, never the global RNG), so a
roll-out is a pure function of its generator. float64 (the Gamma draws: the dtype of the shapes).
Oracles: ``tests/families/test_direct_samplers.py``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

_F64 = torch.float64


def log_standard_gamma(alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """log G, G ~ Gamma(α, 1) independently per element of ``alpha`` (α > 0), in alpha's dtype
    (the families pass their compute dtype: float64 except on MPS)."""
    small = alpha < 1
    if not bool(small.any()):
        return torch.log(torch._standard_gamma(alpha, generator=generator))
    g = torch._standard_gamma(torch.where(small, alpha + 1, alpha), generator=generator)
    u = 1 - torch.rand(alpha.shape, generator=generator, dtype=alpha.dtype, device=alpha.device)  # (0, 1]
    return torch.log(g) + torch.where(small, torch.log(u) / alpha, torch.zeros_like(alpha))


def _envelope(kappa: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per κ, the constants of the Best–Fisher round: r − 1, κ(r² − 1), √(r − 1), √(r + 1)."""
    tau = 1 + torch.sqrt(1 + 4 * kappa * kappa)
    root = torch.sqrt(2 * tau)
    rho = 2 * kappa / (tau + root)
    one_minus_rho = (1 + 1 / (tau - 1 + 2 * kappa) + root) / (tau + root)  # τ − 2κ = 1 + 1/(√(1+4κ²) + 2κ)
    r_minus_1 = torch.where(kappa < 1e-5, 1 / kappa + kappa - 1, one_minus_rho * one_minus_rho / (2 * rho))
    return r_minus_1, kappa * r_minus_1 * (r_minus_1 + 2), torch.sqrt(r_minus_1), torch.sqrt(r_minus_1 + 2)


def _best_fisher(consts: tuple[Tensor, ...], rows: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """One round for the elements of ``rows``: (θ, accepted). Two uniforms per element: U₁ from
    |2V − 1| and the sign of θ from the sign of 2V − 1."""
    r_minus_1, kc, root_m, root_p = (torch.index_select(v, 0, rows) for v in consts)
    u = torch.rand((2, rows.numel()), generator=generator, dtype=_F64, device=rows.device)
    v = 2 * u[0] - 1
    half = (0.5 * math.pi) * v.abs()
    sin_h, cos_h = torch.sin(half), torch.cos(half)
    c = kc / (r_minus_1 + 2 * cos_h * cos_h)  # κ(r − f) = κ(r² − 1)/(r + z)
    accept = (c * (2 - c) > u[1]) | (torch.log(c / u[1]) + 1 - c >= 0)
    theta = 2 * torch.atan2(root_m * sin_h, root_p * cos_h)
    return torch.where(v < 0, -theta, theta), accept


def von_mises_offset(kappa: Tensor, n: int, generator: torch.Generator | None = None,
                     block: int = 1 << 15) -> Tensor:
    """θ ~ VM(0, κ) in [−π, π], float64, shape (len(κ), n): n independent draws per κ (κ > 0).
    Each round works through the pending draws in blocks of ``block`` (cache-sized temporaries)."""
    consts = _envelope(kappa.to(_F64).reshape(-1))
    total = consts[0].numel() * n
    out = torch.empty(total, dtype=_F64, device=kappa.device)
    pending = torch.arange(total, device=kappa.device)
    first = True
    while pending.numel():
        rejected = []
        for i in range(0, pending.numel(), block):
            idx = pending[i:i + block]
            theta, accept = _best_fisher(consts, torch.div(idx, n, rounding_mode="floor"), generator)
            if first:  # idx is the range i .. i + block: keep every draw, redo the rejected ones
                out[i:i + block] = theta
            else:
                out[idx[accept]] = theta[accept]
            rejected.append(idx[~accept])
        pending, first = torch.cat(rejected), False
    return out.reshape(consts[0].numel(), n)
