"""The denoiser D_θ: network inputs from (s_t, x_t, t), a backbone, and the family's head.

MATH.md §1–2: x̂0 = D_θ(inputs_t, t) where the inputs are, as the spec's ``process.inputs`` says,

* ``"tail"``: the normalised tail statistic ``norm_t(s_t)`` (:class:`TailNorm`, the family's own
  normalisation: standardised s_t, vMF ``[s/‖s‖, log‖s‖]``, categorical ``softmax(s)``);
* ``"state"``: the state x_t, flattened (a categorical one-hot state, a point on the sphere, the
  entries of an SPD matrix, … are used as they are);
* ``"tail+state"``: both, concatenated (flattened tail first, then state).

``"auto"`` must be resolved by the caller (tail for independent coupling, tail+state otherwise)
because the denoiser does not know the coupling.

:class:`Denoiser` satisfies the sampling ``Denoiser`` protocol: ``denoiser(s_t, x_t, t)`` takes the
*raw* tail statistic and does its own normalisation. The tail-normalisation statistics are stored
as buffers (``norm_mean``, ``norm_std``), so they travel with the module's ``state_dict`` and
device moves. The network runs in its parameter dtype; its raw output is cast to the dtype of the
inputs (x_t / s_t) before the head, so a float64 process keeps a float64 head (domain clamps such
as Beta's open interval are then those of float64).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mstar_engine.families.base import Family, as_steps
from mstar_engine.networks.embedding import scaled_time
from mstar_engine.networks.mlp import MLP
from mstar_engine.networks.unet import build_unet, config_value
from mstar_engine.process.normalise import TailNorm

INPUT_MODES = ("tail", "state", "tail+state")


def input_features(family: Family, inputs: str) -> int:
    """Number of flattened input features for ``inputs`` (without the time embedding)."""
    _check_inputs(inputs)
    n = 0
    if "tail" in inputs:
        n += math.prod(family.norm_shape)
    if "state" in inputs:
        n += math.prod(family.event_shape)
    return n


def spatial_inputs(family: Family, inputs: str) -> tuple[int, int, tuple[int, int]]:
    """(input channels, output channels, (H, W)) of an image backbone for ``family``: the tail
    statistic, the state and the raw output must all be (channels, H, W) arrays of one size."""
    _check_inputs(inputs)
    shapes = {"event": family.event_shape, "raw output": family.raw_shape}
    if "tail" in inputs:
        shapes["tail statistic"] = family.norm_shape
    bad = {k: v for k, v in shapes.items() if len(v) != 3 or v[1:] != family.event_shape[1:]}
    if bad or len(family.event_shape) != 3:
        raise ValueError(f"the {family.name} family cannot use the U-Net: its shapes "
                         f"{', '.join(f'{k} {v}' for k, v in shapes.items())} are not images (channels, H, W) "
                         "of one size; use network.kind = \"mlp\"")
    channels = (family.norm_shape[0] if "tail" in inputs else 0) + (family.event_shape[0] if "state" in inputs else 0)
    return channels, family.raw_shape[0], tuple(family.event_shape[1:])


def _check_inputs(inputs: str) -> None:
    if inputs not in INPUT_MODES:
        hint = " ('auto' must be resolved first: tail for independent coupling, tail+state otherwise)" \
            if inputs == "auto" else ""
        raise ValueError(f"network inputs must be one of {INPUT_MODES}, got {inputs!r}{hint}")


class Denoiser(nn.Module):
    """x̂0 = head(backbone(inputs(s_t, x_t, t), t·1000/T, labels)) in the family's domain.

    ``backbone(x, t_scaled, labels)`` takes flattened inputs ``(B, input_features)``, the time
    rescaled to [0, 1000] and optional labels, and returns ``(B, prod(family.raw_shape))``.
    """

    def __init__(self, family: Family, norm: TailNorm | None, inputs: str, backbone: nn.Module) -> None:
        super().__init__()
        _check_inputs(inputs)
        if "tail" in inputs and norm is None:
            raise ValueError(f"inputs {inputs!r} use the tail statistic: a TailNorm is required")
        self.family = family
        self.inputs = inputs
        self.backbone = backbone
        self.uses_tail = "tail" in inputs
        self.uses_state = "state" in inputs
        # Image backbones (``backbone.spatial``) take (B, channels, H, W): the inputs are stacked
        # along the channel axis instead of flattened.
        self.spatial = bool(getattr(backbone, "spatial", False))
        if self.spatial:
            spatial_inputs(family, inputs)  # raises for families whose shapes are not images
        if norm is not None and (norm.mean.shape != (family.steps + 1,) or norm.std.shape != (family.steps + 1,)):
            raise ValueError(f"TailNorm statistics have shape {tuple(norm.mean.shape)}, "
                             f"expected ({family.steps + 1},) for T = {family.steps}")
        self.register_buffer("norm_mean", None if norm is None else norm.mean.detach().clone())
        self.register_buffer("norm_std", None if norm is None else norm.std.detach().clone())

    @property
    def norm(self) -> TailNorm | None:
        """The tail normalisation (from the stored buffers)."""
        return None if self.norm_mean is None else TailNorm(self.norm_mean, self.norm_std)

    @property
    def in_features(self) -> int:
        return input_features(self.family, self.inputs)

    def network_input(self, s_t: Tensor | None, x_t: Tensor | None, t: Tensor) -> Tensor:
        """The flattened network input ``(B, in_features)`` (before the time embedding)."""
        parts = []
        if self.uses_tail:
            if s_t is None:
                raise ValueError(f"inputs {self.inputs!r} need the tail statistic s_t")
            parts.append(self.norm(self.family, s_t, t).reshape(s_t.shape[0], *self._layout(self.family.norm_shape)))
        if self.uses_state:
            if x_t is None:
                raise ValueError(f"inputs {self.inputs!r} need the state x_t")
            parts.append(x_t.reshape(x_t.shape[0], *self._layout(self.family.event_shape)))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _layout(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-example input layout: flat for vector backbones, (channels, H, W) for images."""
        return (shape[0], *shape[-2:]) if self.spatial else (-1,)

    def raw(self, s_t: Tensor | None, x_t: Tensor | None, t: Tensor | int, labels: Tensor | None = None) -> Tensor:
        """Raw backbone output, shape ``(B, *family.raw_shape)``, in the network's dtype."""
        ref = s_t if s_t is not None else x_t
        b = ref.shape[0]
        t = as_steps(t, b, ref.device)
        h = self.network_input(s_t, x_t, t)
        dtype = self._param_dtype()
        out = self.backbone(h.to(dtype), scaled_time(t, self.family.steps).to(dtype), labels)
        return out.reshape(b, *self.family.raw_shape)

    def forward(self, s_t: Tensor | None, x_t: Tensor | None, t: Tensor | int,
                labels: Tensor | None = None, guidance: float | None = None) -> Tensor:
        """x̂0 in the domain, shape ``(B, *family.event_shape)``.

        Classifier-free guidance (``guidance`` = w with ``labels``): the conditional and the
        unconditional predictions are combined before the family's head,
        raw = raw_∅ + w (raw_y − raw_∅), and the head maps the result into the domain (for the
        Gaussian, whose head is the identity, this is x̂0_∅ + w (x̂0_y − x̂0_∅)). w = 1 is the plain
        conditional model, w = 0 the unconditional one.
        """
        raw = self.raw(s_t, x_t, t, labels)
        if guidance is not None and labels is not None and guidance != 1.0:
            unconditional = self.raw(s_t, x_t, t, None)
            raw = unconditional + guidance * (raw - unconditional)
        ref = x_t if x_t is not None and x_t.is_floating_point() else s_t
        if ref is not None and ref.is_floating_point():
            raw = raw.to(ref.dtype)
        return self.family.head(raw)

    def _param_dtype(self) -> torch.dtype:
        for p in self.backbone.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.get_default_dtype()


def build_mlp_denoiser(family: Family, norm: TailNorm | None, inputs: str, mlp_cfg: Any = None,
                       dropout: float = 0.0, num_classes: int = 0) -> Denoiser:
    """A :class:`Denoiser` with an :class:`MLP` backbone sized for ``family`` and ``inputs``.

    ``mlp_cfg`` is a mapping or an object (e.g. the spec's ``network.mlp`` section) with ``hidden``,
    ``blocks`` and ``time_dim`` (missing keys take the published sizes 512 / 3 / 32).
    ``num_classes > 0`` makes it class conditional (plus one "no label" entry).
    """
    backbone = MLP(
        in_features=input_features(family, inputs),
        out_features=math.prod(family.raw_shape),
        hidden=int(config_value(mlp_cfg, "hidden", 512)),
        blocks=int(config_value(mlp_cfg, "blocks", 3)),
        time_dim=int(config_value(mlp_cfg, "time_dim", 32)),
        dropout=float(dropout),
        num_classes=int(num_classes),
    )
    return Denoiser(family, norm, inputs, backbone)


def build_unet_denoiser(family: Family, norm: TailNorm | None, inputs: str, network: Any,
                        num_classes: int = 0) -> Denoiser:
    """A :class:`Denoiser` with a U-Net backbone for an image family: input channels are the
    tail statistic's and/or the state's, output channels the family's raw output
    (:func:`spatial_inputs`); ``network`` is the spec's ``[network]`` section (unet sizes,
    preset, dropout)."""
    in_channels, out_channels, (height, width) = spatial_inputs(family, inputs)
    if height != width:
        raise ValueError(f"the U-Net needs square images, got {height}x{width}")
    backbone = build_unet(in_channels, out_channels, height, cfg=network.unet, preset=network.preset,
                          dropout=network.dropout, num_classes=num_classes)
    return Denoiser(family, norm, inputs, backbone)


def drop_labels(labels: Tensor, p: float, null_label: int, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by ``null_label`` with probability ``p`` (classifier-free guidance
    training, the spec's ``network.label_dropout``)."""
    if p <= 0.0:
        return labels
    u = torch.rand(labels.shape, generator=generator, device=labels.device if generator is None else generator.device)
    return torch.where(u.to(labels.device) < p, torch.full_like(labels, null_label), labels)
