"""Time embeddings shared by the denoiser networks.

Time convention (SS-DDPM notes §2.3): the network sees the integer step ``t`` (0..T, 0 being the
pseudo step) rescaled to the fixed range [0, 1000] by ``t · 1000 / T``, so that networks trained
with different numbers of steps see time on the same scale and the sinusoidal frequencies below
(tuned for DDPM's 1000 steps) cover it well. The published code used ``999·linspace(1e-3, 1, N)[t]``
for non-Gaussian schedules and ``(1000/N)(t + 1)`` for Gaussian ones; both are this same rescaling
up to a shift of one step, and a single convention for every family keeps checkpoints comparable.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

#: Upper end of the rescaled time range.
TIME_SCALE = 1000.0


def scaled_time(t: Tensor | int, steps: int) -> Tensor:
    """The step ``t`` (integers in 0..steps) mapped to ``t · 1000 / steps`` ∈ [0, 1000], as float."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.as_tensor(t)
    dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
    return t.to(dtype) * (TIME_SCALE / steps)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0,
                         steps: int | None = None) -> Tensor:
    """Sinusoidal embedding of the (rescaled) time, shape ``(B, dim)``.

    ``t`` has shape ``(B,)`` (a 0-d tensor is treated as a batch of one). It is the time already
    rescaled to [0, 1000] (see :func:`scaled_time`); pass ``steps=T`` to give the raw integer step
    instead and let this function rescale it by ``1000 / T``.

    With ``half = dim // 2`` frequencies ``ω_i = max_period^(−i / (half − 1))``, i = 0..half−1
    (geometric from 1 down to 1/max_period, as in DDPM / the published SS-DDPM MLP), the embedding
    is ``[sin(t ω_0), …, sin(t ω_{half−1}), cos(t ω_0), …, cos(t ω_{half−1})]``, zero-padded by one
    column when ``dim`` is odd. The result is float32 unless ``t`` is float64.
    """
    if dim < 2:
        raise ValueError(f"the time embedding needs dim >= 2, got {dim}")
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    if steps is not None:
        t = scaled_time(t, steps)
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    exponent = torch.arange(half, dtype=dtype, device=t.device) / max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = t.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def resolve_labels(labels, b: int, device: torch.device, num_classes: int) -> Tensor:
    """Class labels for a batch of ``b``: None, negative values or ``num_classes`` mean "no
    label" (the null entry ``num_classes`` used by classifier-free guidance)."""
    if labels is None:
        return torch.full((b,), num_classes, dtype=torch.long, device=device)
    labels = torch.as_tensor(labels, device=device).long()
    if labels.ndim == 0:
        labels = labels.expand(b)
    if bool((labels > num_classes).any()):
        raise ValueError(f"class labels must lie in 0..{num_classes - 1} "
                         f"(or {num_classes} / negative for no label), got max {int(labels.max())}")
    return torch.where(labels < 0, torch.full_like(labels, num_classes), labels)


def label_embedding(num_classes: int, dim: int) -> nn.Embedding | None:
    """The class embedding of a backbone, None without classes: ``num_classes + 1`` rows N(0, 0.1²),
    the last one, the "no label" entry of classifier-free guidance, zero."""
    if num_classes <= 0:
        return None
    embedding = nn.Embedding(num_classes + 1, dim)
    with torch.no_grad():
        embedding.weight.normal_(0.0, 0.1)
        embedding.weight[num_classes].zero_()
    return embedding
