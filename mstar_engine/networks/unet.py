"""The U-Net backbone for images (DDPM, Ho et al. 2020; ADM, Dhariwal & Nichol 2021).

Structure, for ``channel_mult = (m_0, …, m_{L−1})`` and ``R = res_blocks``::

    emb = MLP(sinusoidal(t))  [+ class_embedding[label]]        # Linear(time_dim→4C), SiLU, Linear(4C→4C)
    h = Conv3×3(in_channels → C)(x)                              # skip 0
    level i = 0..L−1 at resolution image_size / 2^i:
        R × ResBlock(→ C·m_i) [+ Attention if the resolution is listed]   # one skip each
        Downsample (Conv3×3, stride 2), except at the last level          # one skip
    middle: ResBlock, Attention, ResBlock (always, at the lowest resolution)
    level i = L−1..0:
        (R + 1) × [concat(h, skip) → ResBlock(→ C·m_i) [+ Attention]]
        Upsample (nearest ×2, Conv3×3), except at level 0
    out = Conv3×3(C → out_channels)(SiLU(GroupNorm(h)))

``ResBlock``: ``h = Conv3×3(SiLU(GN(x)))``; the block's ``Linear(4C → C_out)(SiLU(emb))`` is added
to ``h`` (or, with ``scale_shift``, ADM's ``GN(h)·(1 + scale) + shift`` from a ``Linear(4C → 2 C_out)``);
then ``Conv3×3(Dropout(SiLU(GN(h))))`` and the residual ``x`` (through a 1×1 conv when the channel
count changes). ``Attention``: ``x + Conv1×1(SDPA(q, k, v))`` with ``q, k, v = Conv1×1(GN(x))``,
``head_channels`` channels per head (one head when a block has fewer channels). GroupNorm uses 32
groups, or the largest divisor of the channel count up to 32.

Initialisation: PyTorch defaults, except that the last conv of every residual block, the output
projection of every attention block and the output conv are zero (weights and biases), as in DDPM
and ADM: every residual branch starts as the identity and a fresh U-Net returns exactly zero.
Heads that are degenerate at raw = 0 (vMF ``raw/‖raw‖``, …) need ``zero_output=False``. The class
embedding follows :class:`~mstar_engine.networks.mlp.MLP`: rows N(0, 0.1²), and the last row,
the "no label" entry of classifier-free guidance, zero.

Presets (:data:`UNET_PRESETS`):

* ``cifar10-ddpm``: DDPM's CIFAR-10 model (Ho et al. 2020, §4 and App. B; the 35.7 M parameters
  are their number): C = 128, mult (1, 2, 2, 2), 2 blocks, attention at 16×16 with one head
  (``head_channels = 256``), dropout 0.1, additive time embedding, 32×32 RGB.
* ``imagenet64`` / ``imagenet128``: ADM's class-conditional ImageNet models, flags from the
  openai/guided-diffusion README and ``create_model`` channel multipliers: 64×64 has C = 192,
  mult (1, 2, 3, 4), 3 blocks, attention at 32/16/8, 64 channels per head, dropout 0.1; 128×128
  has C = 256, mult (1, 1, 2, 3, 4), 2 blocks, attention at 32/16/8, dropout 0.0 (ADM uses 4
  heads there; we use 64 channels per head, which has the same parameter count). Both use scale-shift
  norm. ADM additionally uses residual up/down-sampling blocks (``resblock_updown``) and 6 output
  channels (learned variances); we use strided-conv / nearest+conv resampling, so our counts
  (3 → 3 channels, unconditional: 35,746,307 / 276,421,059 / 385,013,251) are below ADM's reported
  296 M and 422 M (the ADM paper's hyperparameter table; adding the resampling blocks, 1000 classes
  and 6 outputs to ours gives ≈ 296 M and ≈ 421 M by a hand estimate).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mstar_engine.networks.embedding import label_embedding, resolve_labels, sinusoidal_embedding

UNET_PRESETS: dict[str, dict] = {
    "cifar10-ddpm": dict(channels=128, channel_mult=(1, 2, 2, 2), res_blocks=2, attention_resolutions=(16,),
                         head_channels=256, dropout=0.1, scale_shift=False, image_size=32),
    "imagenet64": dict(channels=192, channel_mult=(1, 2, 3, 4), res_blocks=3, attention_resolutions=(32, 16, 8),
                       head_channels=64, dropout=0.1, scale_shift=True, image_size=64),
    "imagenet128": dict(channels=256, channel_mult=(1, 1, 2, 3, 4), res_blocks=2,
                        attention_resolutions=(32, 16, 8), head_channels=64, dropout=0.0, scale_shift=True,
                        image_size=128),
}
_ARCH_KEYS = ("channels", "channel_mult", "res_blocks", "attention_resolutions", "head_channels", "scale_shift")


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(g for g in range(1, 33) if c % g == 0), c)


def _zero(module: nn.Module) -> nn.Module:
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, scale_shift: bool) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout if scale_shift else cout)
        self.norm2, self.dropout = _norm(cout), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # emb is already SiLU-activated
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(emb)[:, :, None, None].to(h.dtype)
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class Attention(nn.Module):
    def __init__(self, c: int, head_channels: int, resolution: int) -> None:
        super().__init__()
        if c > head_channels and c % head_channels:
            raise ValueError(f"attention at {resolution}×{resolution} has {c} channels, "
                             f"not a multiple of head_channels = {head_channels}")
        self.heads, self.resolution = max(1, c // head_channels), resolution
        self.norm, self.qkv = _norm(c), nn.Conv2d(c, 3 * c, 1)
        self.proj = _zero(nn.Conv2d(c, c, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)                       # (B, heads, HW, d) each
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Downsample(nn.Conv2d):
    def __init__(self, c: int) -> None:
        super().__init__(c, c, 3, stride=2, padding=1)


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    """``resample(attn(res(h, emb)))``, each part optional."""

    def __init__(self, res: ResBlock | None = None, attn: Attention | None = None,
                 resample: nn.Module | None = None) -> None:
        super().__init__()
        self.res, self.attn, self.resample = res, attn, resample

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        if self.res is not None:
            h = self.res(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        return self.resample(h) if self.resample is not None else h


class UNet(nn.Module):
    """U-Net: ``forward(x, t, labels=None) -> raw`` of shape ``(B, out_channels, H, W)``.

    ``x`` is ``(B, in_channels, image_size, image_size)``; ``t`` is the time already rescaled to
    [0, 1000] (:func:`~mstar_engine.networks.embedding.scaled_time`), shape ``(B,)``. ``image_size``
    must be divisible by ``2^(len(channel_mult) − 1)``. ``attention_resolutions`` that the U-Net
    never reaches are ignored (:attr:`attention_at` lists those used). ``time_dim`` is the width of
    the sinusoidal features (default ``channels``); the embedding itself has ``4·channels``. With
    ``num_classes > 0`` labels in ``0..num_classes`` condition the model, ``num_classes``
    (:attr:`null_label`), negative values or ``labels=None`` meaning "no label". Set
    :attr:`checkpointing` to recompute block activations in the backward pass (training only).
    """

    #: Takes image-shaped inputs: :class:`~mstar_engine.networks.denoiser.Denoiser` stacks them
    #: along the channel axis instead of flattening.
    spatial = True

    def __init__(self, in_channels: int, out_channels: int, image_size: int, channels: int = 128,
                 channel_mult: tuple[int, ...] = (1, 2, 2, 2), res_blocks: int = 2,
                 attention_resolutions: tuple[int, ...] = (16,), head_channels: int = 64, dropout: float = 0.0,
                 num_classes: int = 0, time_dim: int | None = None, scale_shift: bool = False,
                 zero_output: bool = True) -> None:
        super().__init__()
        mult = tuple(int(m) for m in channel_mult)
        if min(in_channels, out_channels, channels, head_channels) < 1:
            raise ValueError(f"U-Net sizes must be positive: in {in_channels}, out {out_channels}, "
                             f"channels {channels}, head_channels {head_channels}")
        if not mult or min(mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty list of positive integers, got {channel_mult}")
        if res_blocks < 1:
            raise ValueError(f"res_blocks must be >= 1, got {res_blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        factor = 2 ** (len(mult) - 1)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1 \
                or image_size % factor:
            raise ValueError(f"image_size {image_size!r} is not supported: with {len(mult)} levels "
                             f"(channel_mult {list(mult)}) the U-Net halves the resolution {len(mult) - 1} times, "
                             f"so the image size must be a positive multiple of {factor}")
        self.in_channels, self.out_channels, self.image_size = in_channels, out_channels, image_size
        self.num_classes, self.time_dim = num_classes, int(time_dim or channels)
        self.checkpointing = False
        emb_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(self.time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embedding = label_embedding(num_classes, emb_dim)

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb_dim, dropout, scale_shift)

        def attn(c: int, r: int) -> Attention | None:
            return Attention(c, head_channels, r) if r in attention_resolutions else None

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down, skips, c = nn.ModuleList(), [channels], channels
        for i, m in enumerate(mult):
            r = image_size >> i
            for _ in range(res_blocks):
                self.down.append(Block(res(c, channels * m), attn(channels * m, r)))
                c = channels * m
                skips.append(c)
            if i < len(mult) - 1:
                self.down.append(Block(resample=Downsample(c)))
                skips.append(c)
        lowest = image_size >> (len(mult) - 1)
        self.middle = nn.ModuleList([Block(res(c, c), Attention(c, head_channels, lowest)), Block(res(c, c))])
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):
            r = image_size >> i
            for j in range(res_blocks + 1):
                up = Upsample(channels * m) if i > 0 and j == res_blocks else None
                self.up.append(Block(res(c + skips.pop(), channels * m), attn(channels * m, r), up))
                c = channels * m
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1))
        if zero_output:
            _zero(self.out[-1])
        self.attention_at = sorted({r for r in attention_resolutions if any(
            b.attn is not None and b.attn.resolution == r for b in self.down)}, reverse=True)

    @property
    def null_label(self) -> int:
        """Index of the "no label" embedding (classifier-free guidance)."""
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        expect = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expect:
            raise ValueError(f"UNet expects input of shape (B, {', '.join(map(str, expect))}), "
                             f"got {tuple(x.shape)}")
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_dim).to(self.conv_in.weight.dtype))
        if self.label_embedding is not None:
            emb = emb + self.label_embedding(resolve_labels(labels, b, x.device, self.num_classes))
        elif labels is not None:
            raise ValueError("labels were given to a UNet built without classes (num_classes = 0)")
        emb = F.silu(emb)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = self._run(block, h, emb)
            skips.append(h)
        for block in self.middle:
            h = self._run(block, h, emb)
        for block in self.up:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    def _run(self, block: Block, h: Tensor, emb: Tensor) -> Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)


def config_value(cfg: Any, key: str, default: Any = None) -> Any:
    """``key`` of a spec section given as a mapping or an object; ``default`` where it is None or missing."""
    if cfg is None:
        return default
    value = cfg.get(key) if isinstance(cfg, Mapping) else getattr(cfg, key, None)
    return default if value is None else value


def build_unet(in_channels: int, out_channels: int, image_size: int, cfg: Any = None, preset: str | None = None,
               dropout: float = 0.0, num_classes: int = 0) -> UNet:
    """A :class:`UNet` from the spec's ``network.unet`` section (object or mapping) or a preset.

    The preset's architecture (:data:`UNET_PRESETS`) replaces the values of ``cfg``; missing keys
    take :class:`UNet`'s defaults. ``dropout`` (the spec's ``network.dropout``) is used when
    non-zero; at 0.0 (the spec default) a preset's own dropout applies. The preset's
    ``image_size`` is its native resolution and is not enforced.
    """
    kwargs = {k: v for k in _ARCH_KEYS if (v := config_value(cfg, k)) is not None}
    drop = float(dropout)
    if preset is not None:
        if preset not in UNET_PRESETS:
            raise ValueError(f"unknown U-Net preset {preset!r}; choose one of {sorted(UNET_PRESETS)}")
        kwargs.update({k: UNET_PRESETS[preset][k] for k in _ARCH_KEYS})
        drop = drop or UNET_PRESETS[preset]["dropout"]
    for key in ("channel_mult", "attention_resolutions"):
        if key in kwargs:
            kwargs[key] = tuple(int(v) for v in kwargs[key])
    return UNet(in_channels, out_channels, image_size, dropout=drop, num_classes=int(num_classes), **kwargs)
