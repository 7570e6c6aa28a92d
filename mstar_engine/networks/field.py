"""A network over the data space for the kinds beside the exponential family: its output has the
shape of the data and no head (flow matching's velocity v(x_t, t); the energy-score model's sample
x̂0(x_t, t, ξ), which also reads a noise vector ξ of the data's shape).

The time t ∈ [0, 1] goes to the backbone as t · 1000 (the range the exponential-family denoiser's
steps are scaled to), and the inputs are flattened for the MLP or stacked as channels for the
U-Net. Classifier-free guidance combines the outputs as out_∅ + w (out_y − out_∅).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mstar_engine.networks.embedding import TIME_SCALE
from mstar_engine.networks.mlp import MLP
from mstar_engine.networks.unet import build_unet, config_value


class FieldNet(nn.Module):
    """``forward(x, t, xi=None, labels=None, guidance=None)``: a tensor shaped like ``x``, in x's dtype."""

    def __init__(self, backbone: nn.Module, event_shape: tuple[int, ...], noise_input: bool) -> None:
        super().__init__()
        self.backbone, self.event_shape, self.noise_input = backbone, tuple(event_shape), noise_input
        self.spatial = bool(getattr(backbone, "spatial", False))

    def _layout(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.event_shape) if self.spatial else x.reshape(x.shape[0], -1)

    def _raw(self, x: Tensor, t: Tensor, xi: Tensor | None, labels: Tensor | None) -> Tensor:
        if self.noise_input != (xi is not None):
            raise ValueError("this network reads a noise vector xi" if self.noise_input else
                             "this network takes no noise vector")
        h = self._layout(x) if xi is None else torch.cat([self._layout(x), self._layout(xi)], dim=1)
        dtype = next(self.backbone.parameters()).dtype
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        return self.backbone(h.to(dtype), (t * TIME_SCALE).to(dtype), labels).reshape(x.shape)

    def forward(self, x: Tensor, t: Tensor, xi: Tensor | None = None, labels: Tensor | None = None,
                guidance: float | None = None) -> Tensor:
        out = self._raw(x, t, xi, labels)
        if guidance is not None and labels is not None and guidance != 1.0:
            unconditional = self._raw(x, t, xi, None)
            out = unconditional + guidance * (out - unconditional)
        return out.to(x.dtype)


def build_field(event_shape: tuple[int, ...], network: Any, *, noise_input: bool = False,
                num_classes: int = 0) -> FieldNet:
    """A :class:`FieldNet` for data of ``event_shape``: the U-Net when ``network.kind`` is "unet"
    (images (C, H, W), square), else the MLP (``network.mlp`` sizes); ``network`` is the spec's
    ``[network]`` table (kind already resolved)."""
    factor = 2 if noise_input else 1
    if network.kind == "unet":
        if len(event_shape) != 3 or event_shape[1] != event_shape[2]:
            raise ValueError(f"the U-Net needs square images (C, H, W), got data of shape {event_shape}; use "
                             "network.kind = \"mlp\"")
        channels = event_shape[0]
        backbone = build_unet(channels * factor, channels, event_shape[1], cfg=network.unet, preset=network.preset,
                              dropout=network.dropout, num_classes=num_classes)
    else:
        cfg = network.mlp
        size = math.prod(event_shape)
        backbone = MLP(in_features=size * factor, out_features=size, hidden=int(config_value(cfg, "hidden", 512)),
                       blocks=int(config_value(cfg, "blocks", 3)), time_dim=int(config_value(cfg, "time_dim", 32)),
                       dropout=float(network.dropout), num_classes=int(num_classes))
    return FieldNet(backbone, event_shape, noise_input)
