"""Per-step training losses (MATH.md §1 "Loss").

The step-t term of the bound is KL( q_{t-1}(· | x0) ‖ q_{t-1}(· | x̂0) ) between two members of
one family, in closed form (``kl``), or the family's rescaled KL, the L_simple analogue
(``kl-rescaled``). ``x0-mse`` regresses x̂0 on x0; ``eps-mse`` is the Gaussian noise-prediction
loss ‖ε − ε̂‖², which for q_t = N(m_t x0, v_t I) equals SNR_t ‖x0 − x̂0‖² (ε̂ is the noise that x̂0
implies for the same x_t), so the DDPM training step is this loss on the same inputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from mstar_engine.families.base import Family, as_steps

LOSS_KINDS = ("kl", "kl-rescaled", "x0-mse", "eps-mse")
WEIGHTINGS = ("none", "snr", "snr-trunc", "min-snr")
MIN_SNR_GAMMA = 5.0  # Hang et al. (2023)


def step_loss(family: Family, x0: Tensor, x0_hat: Tensor, t: Tensor, kind: str = "kl",
              weighting: str = "none") -> Tensor:
    """Per-example loss at steps ``t`` (shape (B,)), summed over the event."""
    t = as_steps(t, x0.shape[0], x0.device)
    if kind == "kl":
        loss = family.kl(x0, x0_hat, t - 1)
    elif kind == "kl-rescaled":
        loss = family.kl_rescaled(x0, x0_hat, t - 1)
    elif kind == "x0-mse":
        loss = (x0 - x0_hat).pow(2).flatten(1).sum(1)
    elif kind == "eps-mse":
        loss = family.gaussian_snr().to(x0.device)[t].to(x0.dtype) * (x0 - x0_hat).pow(2).flatten(1).sum(1)
    else:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSS_KINDS}")
    return loss * loss_weight(family, t, weighting).to(loss.dtype)


def loss_weight(family: Family, t: Tensor, weighting: str) -> Tensor:
    """Per-step weight of training (``process.loss_weighting``) and distillation
    (``distill.weighting``): 1, SNR_t, max(SNR_t, 1) (truncated SNR of progressive distillation)
    or min(SNR_t, γ) (min-SNR), from the family's Gaussian-equivalent SNR."""
    if weighting == "none":
        return torch.ones(t.shape, device=t.device)
    snr = family.gaussian_snr().to(t.device)[t]
    if weighting == "snr":
        return snr
    if weighting == "snr-trunc":
        return snr.clamp(min=1.0)
    if weighting == "min-snr":
        return snr.clamp(max=MIN_SNR_GAMMA)
    raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {WEIGHTINGS}")
