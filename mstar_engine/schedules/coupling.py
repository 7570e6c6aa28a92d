"""Coupling schedules ρ_t (MATH.md §2): how strongly x_{t−1} is tied to x_t by the Gaussian-copula
kernel ξ' = ρ_t ξ_t + sqrt(1 − ρ_t²) ε. Every rule returns a float64 tensor of length T + 1
(index t = 1..T couples x_t → x_{t−1}; index 0 is unused and set to 0), except ``learned``,
which returns a :class:`LearnedCoupling` module whose forward() gives that tensor.

* independent: ρ_t = 0 (the star-shaped process).
* deterministic: ρ_t = 1 (DDIM-like; deterministic given x_t and the inverse's auxiliary draws).
* constant: ρ_t = rho for a given rho in [0, 1].
* ddpm: ρ_t = sqrt(SNR_t / SNR_{t−1}) from a Gaussian-equivalent SNR array (length T + 1, e.g.
  :func:`~.registry.gaussian_equivalent_snr`), the minimiser of the Gaussian kernel KL; with DDPM
  marginals this is the DDPM posterior, interaction M*_t = sqrt(α_t)/β_t. Clipped to [0, 1]: a
  schedule whose SNR increases from t − 1 to t (ss-linear's last step) gets ρ_t = 1, and
  SNR_0 = ∞ gives ρ_1 = 0.
* learned: one unconstrained parameter θ_t per step, ρ_t = sigmoid(θ_t), trained with the network
  (MATH.md §2). Initialised at a given constant ``rho`` (the spec's ``process.coupling.rho``), else
  at the ddpm rule when an SNR is given (θ = logit ρ*, with ρ* clipped to [1e-4, 1 − 1e-4] so the
  logit is finite), else at ρ = 0.5 (θ = 0): the midpoint, from which the gradient of the kernel
  KL can move either way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

RHO_CLIP = 1e-4


def _steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"a coupling needs an integer number of steps T >= 1, got {steps!r}")
    return steps


def _full(steps: int, value: float) -> torch.Tensor:
    rho = torch.full((_steps(steps) + 1,), float(value), dtype=torch.float64)
    rho[0] = 0.0
    return rho


def _as_snr(snr, steps: int) -> torch.Tensor:
    if snr is None:
        raise ValueError("the ddpm coupling needs the Gaussian-equivalent SNR of the schedule (length T + 1)")
    snr = torch.as_tensor(snr, dtype=torch.float64)
    if snr.shape != (steps + 1,):
        raise ValueError(f"the ddpm coupling needs an SNR array of length T + 1 = {steps + 1}, "
                         f"got shape {tuple(snr.shape)}")
    if torch.isnan(snr).any() or (snr[1:] <= 0).any() or not torch.isfinite(snr[1:]).all() or (snr[0] <= 0):
        raise ValueError("the ddpm coupling needs SNR_t finite and > 0 for t = 1..T (SNR_0 may be inf)")
    return snr


def ddpm_rho(snr, steps: int) -> torch.Tensor:
    """ρ*_t = sqrt(SNR_t / SNR_{t−1}) clipped to [0, 1], index 0 = 0."""
    snr = _as_snr(snr, _steps(steps))
    rho = torch.zeros(steps + 1, dtype=torch.float64)
    rho[1:] = torch.sqrt(snr[1:] / snr[:-1]).clamp(0.0, 1.0)
    return rho


def constant_rho(steps: int, rho: float | None) -> torch.Tensor:
    if rho is None or not (0.0 <= float(rho) <= 1.0) or math.isnan(float(rho)):
        raise ValueError(f"the constant coupling needs rho in [0, 1], got {rho!r}")
    return _full(steps, rho)


class LearnedCoupling(nn.Module):
    """ρ_t = sigmoid(θ_t), one parameter per index t = 0..T (θ_0 is unused)."""

    def __init__(self, steps: int, snr=None, start: float | None = None) -> None:
        super().__init__()
        steps = _steps(steps)
        if snr is None and start is None:
            init = torch.zeros(steps + 1, dtype=torch.float64)
        else:
            rho = (constant_rho(steps, start) if start is not None else ddpm_rho(snr, steps)).clamp(RHO_CLIP, 1 - RHO_CLIP)
            init = torch.log(rho) - torch.log1p(-rho)
            init[0] = 0.0
        self.logit = nn.Parameter(init)

    @property
    def steps(self) -> int:
        return self.logit.shape[0] - 1

    def forward(self) -> torch.Tensor:
        # kept inside [RHO_CLIP, 1 − RHO_CLIP]: at ρ = 1 the kernel's sqrt(1 − ρ²) has an infinite
        # derivative, which turned the logits into NaN (Wishart, benchmarks/pairs.py)
        rho = torch.sigmoid(self.logit).clamp(RHO_CLIP, 1 - RHO_CLIP)
        return torch.cat([rho.new_zeros(1), rho[1:]])


def gaussian_interaction(rho: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """M_t = ρ_t / (sqrt(v_{t−1} v_t) (1 − ρ_t²)) for t = 1..T (MATH.md §2, Gaussian case); index 0 = 0."""
    rho, var = torch.as_tensor(rho, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    out = torch.zeros_like(rho)
    out[1:] = rho[1:] / (torch.sqrt(var[:-1] * var[1:]) * (1 - rho[1:] ** 2))
    return out


@dataclass(frozen=True)
class CouplingInfo:
    name: str
    summary: str
    build: Callable[..., torch.Tensor | LearnedCoupling]


def _build_independent(steps: int, snr=None, rho=None) -> torch.Tensor:
    return _full(steps, 0.0)


def _build_deterministic(steps: int, snr=None, rho=None) -> torch.Tensor:
    return _full(steps, 1.0)


def _build_constant(steps: int, snr=None, rho=None) -> torch.Tensor:
    return constant_rho(steps, rho)


def _build_ddpm(steps: int, snr=None, rho=None) -> torch.Tensor:
    return ddpm_rho(snr, steps)


def _build_learned(steps: int, snr=None, rho=None) -> LearnedCoupling:
    return LearnedCoupling(steps, snr, start=rho)


COUPLINGS: dict[str, CouplingInfo] = {
    c.name: c
    for c in (
        CouplingInfo("independent", "rho = 0: the star-shaped process", _build_independent),
        CouplingInfo("deterministic", "rho = 1: deterministic given x_t (DDIM analogue)", _build_deterministic),
        CouplingInfo("constant", "rho = the given constant in [0, 1]", _build_constant),
        CouplingInfo("ddpm", "rho_t = sqrt(SNR_t / SNR_{t-1}) from the Gaussian-equivalent SNR", _build_ddpm),
        CouplingInfo("learned", "rho_t = sigmoid(theta_t), trained; starts at rho if given, else the ddpm rule", _build_learned),
    )
}


def build_coupling(kind: str, steps: int, snr=None, rho: float | None = None) -> torch.Tensor | LearnedCoupling:
    """``COUPLINGS[kind].build(steps, snr=..., rho=...)`` with a clear error for an unknown kind."""
    try:
        info = COUPLINGS[kind]
    except KeyError:
        raise KeyError(f"unknown coupling {kind!r}; known: {', '.join(COUPLINGS)}") from None
    return info.build(steps, snr=snr, rho=rho)
