"""A Gaussian image training step equals the plain DDPM training step (issue #5).

Oracle: the textbook DDPM step written out here, independently of mstar — linear β from 1e-4 to
0.02 over T = 1000, x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε, loss mean‖ε − ε_θ(x_t, t)‖² — with an ε-predicting
U-Net. mstar's Gaussian family with the ``linear`` schedule builds x_t from the same x0 and the
same noise, and its ``eps-mse`` loss, evaluated on the x̂0 that the same network output implies,
must give the same loss value (per pixel) to 1e-6.
"""
from __future__ import annotations

import torch

from mstar_engine.families.gaussian import Gaussian
from mstar_engine.networks.unet import UNet
from mstar_engine.process.losses import step_loss
from mstar_engine.schedules import build_schedule

T = 1000


def test_gaussian_image_step_equals_the_plain_ddpm_step():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((6, 3, 8, 8), generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.randint(1, T + 1, (6,), generator=g)           # mstar counts steps 1..T
    net = UNet(3, 3, 8, channels=8, channel_mult=(1, 2), res_blocks=1, attention_resolutions=(4,), head_channels=8)
    for p in net.parameters():                                 # leave the zero-initialised start
        p.data.add_(0.05 * torch.randn(p.shape, generator=g))
    net = net.double()

    # the plain DDPM step, written from the paper
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)[t - 1].reshape(-1, 1, 1, 1)
    x_t_ddpm = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    eps_hat = net(x_t_ddpm, (t - 1).double())
    plain = (eps - eps_hat).pow(2).mean()

    # mstar: the Gaussian family on the DDPM linear schedule, the same noise, the same network output
    family = Gaussian((3, 8, 8), **build_schedule("linear", T))
    x_t = family.from_noise(eps, x0, t)
    assert torch.allclose(x_t, x_t_ddpm, rtol=0, atol=1e-12)
    x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
    ours = step_loss(family, x0, x0_hat, t, "eps-mse").mean() / x0[0].numel()
    ours, plain = float(ours.detach()), float(plain.detach())
    assert abs(ours - plain) <= 1e-6 * plain, (ours, plain)
