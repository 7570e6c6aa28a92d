"""Gaussian oracles of MATH.md §2: the coupled reverse step with DDPM marginals is the DDPM
ancestral step (coupling `ddpm`) and the DDIM η = 0 step (coupling `deterministic`), written here
directly from the DDPM/DDIM formulas of Ho et al. and Song et al."""
import math

import pytest
import torch

from mstar_engine.families.gaussian import Gaussian
from mstar_engine.sampling import reverse_step

T = 50


def cosine_alpha_bar(steps: int) -> torch.Tensor:
    """ᾱ_t for t = 0..T of the cosine schedule (Nichol & Dhariwal), ᾱ_0 = 1."""
    s = 0.008
    t = torch.arange(steps + 1, dtype=torch.float64)
    f = torch.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2
    return (f / f[0]).clamp(min=1e-12)


@pytest.fixture(scope="module")
def ddpm():
    abar = cosine_alpha_bar(T)
    var = (1 - abar).clamp(min=1e-20)
    fam = Gaussian((3,), mean=abar.sqrt(), var=var)
    return fam, abar


def toy_denoiser(x_t, t):
    return torch.tanh(0.7 * x_t) + 0.01 * t.to(x_t.dtype)[:, None]


def test_ddpm_coupling_is_ddpm_ancestral_step(ddpm):
    fam, abar = ddpm
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g, dtype=torch.float64)
    y = x.clone()
    for t in range(T, 1, -1):
        tt = torch.full((x.shape[0],), t)
        x0_hat = toy_denoiser(x, tt)
        eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
        snr = abar / (1 - abar)
        rho = math.sqrt(snr[t] / snr[t - 1])            # the `ddpm` coupling rule
        x = reverse_step(fam, x, x0_hat, t, rho, eps=eps)
        # Ho et al. (2020), eq. 7: posterior mean and variance of q(x_{t-1} | x_t, x0)
        alpha_t, beta_t = abar[t] / abar[t - 1], 1 - abar[t] / abar[t - 1]
        y0_hat = toy_denoiser(y, tt)
        mean = (abar[t - 1].sqrt() * beta_t / (1 - abar[t])) * y0_hat \
            + (alpha_t.sqrt() * (1 - abar[t - 1]) / (1 - abar[t])) * y
        var = (1 - abar[t - 1]) / (1 - abar[t]) * beta_t
        y = mean + var.sqrt() * eps
        assert torch.allclose(x, y, atol=1e-6, rtol=0), f"step {t}: max diff {(x - y).abs().max():.2e}"


def test_deterministic_coupling_is_ddim_eta0(ddpm):
    fam, abar = ddpm
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 3, generator=g, dtype=torch.float64)
    y = x.clone()
    for t in range(T, 1, -1):
        tt = torch.full((x.shape[0],), t)
        x = reverse_step(fam, x, toy_denoiser(x, tt), t, 1.0, generator=g)
        # Song et al. (2021), eq. 12 with σ_t = 0
        y0 = toy_denoiser(y, tt)
        eps_hat = (y - abar[t].sqrt() * y0) / (1 - abar[t]).sqrt()
        y = abar[t - 1].sqrt() * y0 + (1 - abar[t - 1]).sqrt() * eps_hat
        assert torch.allclose(x, y, atol=1e-6, rtol=0), f"step {t}: max diff {(x - y).abs().max():.2e}"
