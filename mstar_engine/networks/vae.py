"""The VAE baseline's networks (Kingma & Welling 2014): a convolutional encoder and decoder with a
spatial latent, and the :class:`VAE` that joins them with a Gaussian decoder likelihood.

Images (C, H, W), square, H divisible by 4; the latent is (latent_channels, H/4, W/4)::

    Encoder: Conv3×3(C → ch); [GN, SiLU, Conv4×4 stride 2](ch → ch);
             [GN, SiLU, Conv4×4 stride 2](ch → 2ch); + [GN, SiLU, Conv3×3](2ch → 2ch) (residual);
             [GN, SiLU, Conv3×3](2ch → 2 latent_channels) = (mu, logvar)
    Decoder: Conv3×3(latent_channels → 2ch); + [GN, SiLU, Conv3×3](2ch → 2ch) (residual);
             [GN, SiLU, ConvT4×4 stride 2](2ch → ch); [GN, SiLU, ConvT4×4 stride 2](ch → ch);
             [GN, SiLU, Conv3×3](ch → C) = the mean of p(x | z)

GroupNorm with the largest divisor of the channel count up to 8 as its group count. The encoder
and the decoder are separate modules, so that a later stage (latent diffusion) can encode data
with one and decode samples with the other. The likelihood p(x | z) = N(x; decoder(z), σ²) has a
learned log σ per image channel, clamped to [-7, 2]; the encoder's log-variance is clamped to
[-30, 20] (exp stays finite).

The negative ELBO of an example, in nats (Monte Carlo over the latent draw ε ~ N(0, I)):
−log N(x; decoder(mu + exp(logvar / 2) ε), σ²) summed over pixels + KL(N(mu, diag exp logvar) ‖
N(0, I)) summed over latent dimensions (closed form). Its expectation over ε is ≥ −log p(x), with
equality when the encoder gives the exact posterior.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

#: Range of the decoder's per-channel log σ.
LOG_SCALE_RANGE = (-7.0, 2.0)
#: Range of the encoder's log-variance.
LOGVAR_RANGE = (-30.0, 20.0)
#: The two stride-2 convolutions: the latent is the image size / 4.
DOWNSAMPLING = 4


def _groups(c: int) -> int:
    return math.gcd(8, c)


def _block(cin: int, cout: int, conv: type = nn.Conv2d, **kw) -> nn.Sequential:
    """GroupNorm, SiLU, then ``conv(cin → cout)``."""
    return nn.Sequential(nn.GroupNorm(_groups(cin), cin), nn.SiLU(), conv(cin, cout, **kw))


class Encoder(nn.Module):
    """``forward(x) -> (mu, logvar)``: images (B, C, H, W) to the mean and log-variance (clamped to
    :data:`LOGVAR_RANGE`) of q(z | x), each (B, latent_channels, H/4, W/4)."""

    def __init__(self, in_channels: int, latent_channels: int, channels: int = 32) -> None:
        super().__init__()
        ch = channels
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.Sequential(_block(ch, ch, kernel_size=4, stride=2, padding=1),
                                  _block(ch, 2 * ch, kernel_size=4, stride=2, padding=1))
        self.mid = _block(2 * ch, 2 * ch, kernel_size=3, padding=1)
        self.head = _block(2 * ch, 2 * latent_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.down(self.conv_in(x))
        h = h + self.mid(h)
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)


class Decoder(nn.Module):
    """``forward(z) -> mean``: latents (B, latent_channels, H/4, W/4) to the mean of p(x | z),
    images (B, C, H, W)."""

    def __init__(self, out_channels: int, latent_channels: int, channels: int = 32) -> None:
        super().__init__()
        ch = channels
        self.conv_in = nn.Conv2d(latent_channels, 2 * ch, 3, padding=1)
        self.mid = _block(2 * ch, 2 * ch, kernel_size=3, padding=1)
        self.up = nn.Sequential(_block(2 * ch, ch, nn.ConvTranspose2d, kernel_size=4, stride=2, padding=1),
                                _block(ch, ch, nn.ConvTranspose2d, kernel_size=4, stride=2, padding=1))
        self.out = _block(ch, out_channels, kernel_size=3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.conv_in(z)
        return self.out(self.up(h + self.mid(h)))


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp logvar) ‖ N(0, I)) per example (closed form), summed over all but the
    first dimension."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """−log N(x; mean, exp(log_scale)²) per example, summed over all but the first dimension
    (``log_scale`` broadcasts against ``x``)."""
    z = (x - mean) * torch.exp(-log_scale)
    return (0.5 * z.square() + log_scale + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


class VAE(nn.Module):
    """An encoder, a decoder and the decoder likelihood's learned per-channel log σ
    (``log_scale``, one per image channel).

    ``forward(x, eps=None, beta=1.0, labels=None)`` has two uses, because the training loop and
    the samplers call every model kind's network as ``net(*inputs)``: with ``eps`` (latent draws
    shaped like the latent) it is the per-example objective ``nll + beta · kl`` of images ``x``
    (:meth:`negative_elbo`; beta = 1: the negative ELBO); without it, ``x`` is a latent z and the
    output is the decoded mean image (:meth:`decode`), in z's dtype. The VAE is unconditional:
    labels are refused.

    The training loop and the samplers read a network's ``backbone`` (class count, torch.compile):
    the VAE is its own backbone, with no classes."""

    num_classes = 0

    def __init__(self, encoder: nn.Module, decoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.log_scale = nn.Parameter(torch.zeros(channels))

    @property
    def backbone(self) -> VAE:
        return self

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of q(z | x), in the parameters' dtype."""
        return self.encoder(x.to(self._dtype()))

    def decode(self, z: Tensor) -> Tensor:
        """The mean of p(x | z), in the parameters' dtype."""
        return self.decoder(z.to(self._dtype()))

    def scale(self, ndim: int) -> Tensor:
        """log σ of the decoder likelihood, clamped to :data:`LOG_SCALE_RANGE`, shaped to broadcast
        against images of ``ndim`` dimensions (channel first after the batch)."""
        return self.log_scale.clamp(*LOG_SCALE_RANGE).view(-1, *(1,) * (ndim - 2))

    def terms(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
        """Per-example (−log p(x | z), KL(q(z | x) ‖ p(z))) with z = mu + exp(logvar / 2) ε, each
        (B,), in nats, computed in at least float32 (the networks may run under autocast)."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        mu, logvar = (v.to(dtype) for v in self.encode(x))
        z = mu + torch.exp(0.5 * logvar) * eps.to(dtype)
        mean = self.decode(z).to(dtype)
        return gaussian_nll(x.to(dtype), mean, self.scale(x.ndim).to(dtype)), gaussian_kl(mu, logvar)

    def negative_elbo(self, x: Tensor, eps: Tensor, beta: float = 1.0) -> Tensor:
        """−ELBO(x) per example (B,) in nats for the latent draws ``eps`` (B, *latent); with
        ``beta`` ≠ 1 the KL term is weighted by it (β-VAE; no longer a bound)."""
        nll, kl = self.terms(x, eps)
        return nll + beta * kl

    def forward(self, x: Tensor, eps: Tensor | None = None, beta: float = 1.0,
                labels: Tensor | None = None) -> Tensor:
        if labels is not None:
            raise ValueError("the VAE is unconditional and takes no class labels: set network.class_conditional "
                             "= false")
        if eps is None:
            return self.decode(x).to(x.dtype)
        return self.negative_elbo(x, eps, beta)

    def _dtype(self) -> torch.dtype:
        return self.log_scale.dtype


def latent_shape(event_shape: tuple[int, ...], latent_channels: int) -> tuple[int, int, int]:
    """The latent of images ``event_shape`` (C, H, W): (latent_channels, H/4, W/4)."""
    check_image_shape(event_shape)
    return (int(latent_channels), event_shape[1] // DOWNSAMPLING, event_shape[2] // DOWNSAMPLING)


def check_image_shape(event_shape: tuple[int, ...]) -> None:
    """ValueError unless ``event_shape`` is a square image (C, H, H) with H divisible by 4."""
    shape = tuple(event_shape)
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] % DOWNSAMPLING or shape[1] < DOWNSAMPLING:
        raise ValueError(f"the VAE needs square images (C, H, W) with H = W a multiple of {DOWNSAMPLING} (two "
                         f"stride-2 downsamplings), got data of shape {shape}; use an image dataset and set "
                         f"data.image_size to a multiple of {DOWNSAMPLING} (e.g. 32 for MNIST)")


def build_vae(event_shape: tuple[int, ...], cfg: Any) -> VAE:
    """The :class:`VAE` for images of ``event_shape`` (C, H, W; square, H divisible by 4);
    ``cfg``: the spec's ``[process.vae]`` table (``latent_channels``, ``channels``)."""
    check_image_shape(event_shape)
    c, latent, ch = int(event_shape[0]), int(cfg.latent_channels), int(cfg.channels)
    return VAE(Encoder(c, latent, ch), Decoder(c, latent, ch), c)


def vae_size(event_shape: tuple[int, ...], latent_channels: int, channels: int) -> tuple[int, int, int]:
    """(parameters, activation values kept per example for the backward pass, values alive per
    example in a forward pass without gradients) of :func:`build_vae`'s network, by arithmetic (no
    network built): the parameters exactly, the activations roughly (every GroupNorm, SiLU and conv
    output, and the likelihood's terms)."""
    c, size = int(event_shape[0]), int(event_shape[-1])
    L, ch = int(latent_channels), int(channels)

    def conv(cin: int, cout: int, k: int) -> int:
        return cin * cout * k * k + cout

    def block(cin: int, cout: int, k: int) -> int:
        return 2 * cin + conv(cin, cout, k)  # GroupNorm's weight and bias, then the conv

    encoder = conv(c, ch, 3) + block(ch, ch, 4) + block(ch, 2 * ch, 4) + block(2 * ch, 2 * ch, 3) + \
        block(2 * ch, 2 * L, 3)
    decoder = conv(L, 2 * ch, 3) + block(2 * ch, 2 * ch, 3) + block(2 * ch, ch, 4) + block(ch, ch, 4) + block(ch, c, 3)
    full, half, quarter = size * size, (size // 2) ** 2, (size // 4) ** 2
    # per resolution: the encoder's and the decoder's GroupNorm, SiLU and conv outputs, the input,
    # the latent draw (mu, logvar, z) and the likelihood's terms
    kept = (6 * c + 6 * ch) * full + 6 * ch * half + (28 * ch + 6 * L) * quarter
    return encoder + decoder + c, kept, (3 * ch + 2 * c) * full
