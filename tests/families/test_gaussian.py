"""Gaussian family: oracles against scipy, the exact coupled kernel (MATH.md §2) and DDPM."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from mstar_engine.families.gaussian import (
    Gaussian,
    coupled_kernel_kl,
    coupled_kernel_params,
    interaction,
    optimal_rho,
)
from mstar_engine.families.base import DomainError
from mstar_engine.process.kernel import coupled_step
from tests.families.fixtures import out_of_domain, toy, toy_data

F64 = torch.float64


def ddpm_family(steps: int = 10, event=(4,)) -> tuple[Gaussian, torch.Tensor]:
    """DDPM marginals m_t² = ᾱ_t, v_t = 1 − ᾱ_t from a linear β schedule (index 0: β_0 tiny)."""
    betas = torch.linspace(1e-3, 0.3, steps + 1, dtype=F64)
    abar = torch.cumprod(1 - betas, 0)
    return Gaussian(event, mean=abar.sqrt(), var=1 - abar), abar


def test_log_prob_matches_scipy():
    fam = toy(Gaussian)
    g = torch.Generator().manual_seed(0)
    x0 = toy_data(fam, 6, g)
    t = torch.arange(6) + 1
    x = fam.sample(x0, t, g)
    m, v = fam.mean[t][:, None].numpy(), fam.var[t][:, None].numpy()
    ref = stats.norm(m * x0.numpy(), np.sqrt(v)).logpdf(x.numpy()).sum(1)
    np.testing.assert_allclose(fam.log_prob(x, x0, t).numpy(), ref, rtol=1e-12)


def test_exponential_family_identity_and_kl():
    fam = toy(Gaussian)
    g = torch.Generator().manual_seed(1)
    x0, x0b = toy_data(fam, 5, g), toy_data(fam, 5, g)
    x = torch.randn(5, 3, generator=g, dtype=F64)
    for t in range(fam.steps + 1):
        c_a = fam.log_prob(x, x0, t) - ((fam.features(x0) * fam.stat(x, t)).sum(1) - fam.log_normalizer(x0, t))
        c_b = fam.log_prob(x, x0b, t) - ((fam.features(x0b) * fam.stat(x, t)).sum(1) - fam.log_normalizer(x0b, t))
        torch.testing.assert_close(c_a, c_b, rtol=1e-10, atol=1e-10)
        # KL of two Gaussians with equal variance, computed by torch.distributions
        m, v = float(fam.mean[t]), float(fam.var[t])
        ref = torch.distributions.kl_divergence(torch.distributions.Normal(m * x0, math.sqrt(v)),
                                                torch.distributions.Normal(m * x0b, math.sqrt(v))).sum(1)
        torch.testing.assert_close(fam.kl(x0, x0b, t), ref, rtol=1e-10, atol=1e-12)
        snr = float(fam.gaussian_snr()[t])
        torch.testing.assert_close(fam.kl(x0, x0b, t), 0.5 * snr * fam.kl_rescaled(x0, x0b, t))


def test_noise_map_is_exact_inverse():
    fam = toy(Gaussian)
    g = torch.Generator().manual_seed(2)
    x0 = toy_data(fam, 4000, g)
    t = torch.randint(0, fam.steps + 1, (4000,), generator=g)
    x = fam.sample(x0, t, g)
    xi = fam.to_noise(x, x0, t)
    torch.testing.assert_close(fam.from_noise(xi, x0, t), x, rtol=0, atol=1e-12)
    assert stats.kstest(xi.flatten().numpy(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("t", [1, 5, 10])
def test_coupled_kernel_closed_form_matches_direct_kl(t):
    fam, _ = ddpm_family()
    g = torch.Generator().manual_seed(3)
    x0, x0_hat = torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64)
    x_t = fam.sample(x0, t, g)
    mp, vp, mt, vt = fam.mean[t - 1], fam.var[t - 1], fam.mean[t], fam.var[t]
    for rho in [0.0, 0.3, 0.7, 0.95]:
        rho_t = torch.tensor(rho, dtype=F64)
        a, b, var = coupled_kernel_params(mp, vp, mt, vt, rho_t)
        # the kernel coupled_step draws, with common noise, is N(a x0 + b x_t, var)
        eps = torch.randn(3, 4, generator=g, dtype=F64)
        drawn = coupled_step(fam, x_t, x0, t, rho, eps=eps)
        torch.testing.assert_close(drawn, a * x0 + b * x_t + var.sqrt() * eps, rtol=1e-12, atol=1e-12)
        # KL of the two Gaussian kernels (x0 vs x̂0, same x_t), computed directly
        direct = torch.distributions.kl_divergence(
            torch.distributions.Normal(a * x0 + b * x_t, var.sqrt()),
            torch.distributions.Normal(a * x0_hat + b * x_t, var.sqrt())).sum(1)
        closed = coupled_kernel_kl(mp, vp, mt, vt, rho_t, ((x0 - x0_hat) ** 2).sum(1))
        torch.testing.assert_close(closed, direct, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fam.coupled_kl(x0, x0_hat, t, rho), closed, rtol=1e-12, atol=1e-12)
    # ρ = 0 is the star-shaped KL of step t − 1
    torch.testing.assert_close(fam.coupled_kl(x0, x0_hat, t, 0.0), fam.kl(x0, x0_hat, t - 1))


@pytest.mark.parametrize("t", [1, 4, 10])
def test_coupled_kernel_kl_is_minimised_at_rho_star(t):
    fam, _ = ddpm_family()
    snr = fam.gaussian_snr()
    rho_star = optimal_rho(snr[t], snr[t - 1])
    grid = torch.linspace(0, 0.9999, 20001, dtype=F64)
    kl = coupled_kernel_kl(fam.mean[t - 1], fam.var[t - 1], fam.mean[t], fam.var[t], grid, torch.tensor(1.0, dtype=F64))
    assert abs(float(grid[kl.argmin()]) - float(rho_star)) < 2e-4
    at_star = coupled_kernel_kl(fam.mean[t - 1], fam.var[t - 1], fam.mean[t], fam.var[t], rho_star,
                                torch.tensor(1.0, dtype=F64))
    assert float(at_star) <= float(kl.min()) + 1e-12
    # the minimum is the DDPM VLB term ½ (SNR_{t−1} − SNR_t) ‖x0 − x̂0‖²
    torch.testing.assert_close(at_star, 0.5 * (snr[t - 1] - snr[t]), rtol=1e-9, atol=1e-12)


def test_rho_star_kernel_is_the_ddpm_posterior():
    fam, abar = ddpm_family(steps=12)
    alpha = abar[1:] / abar[:-1]
    beta = 1 - alpha
    snr = fam.gaussian_snr()
    for t in range(1, fam.steps + 1):
        rho = optimal_rho(snr[t], snr[t - 1])
        a, b, var = coupled_kernel_params(fam.mean[t - 1], fam.var[t - 1], fam.mean[t], fam.var[t], rho)
        bt = beta[t - 1]
        beta_tilde = (1 - abar[t - 1]) / (1 - abar[t]) * bt
        coef_x0 = abar[t - 1].sqrt() * bt / (1 - abar[t])
        coef_xt = alpha[t - 1].sqrt() * (1 - abar[t - 1]) / (1 - abar[t])
        torch.testing.assert_close(var, beta_tilde, rtol=1e-10, atol=0)
        torch.testing.assert_close(a, coef_x0, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(b, coef_xt, rtol=1e-10, atol=0)
        m_star = interaction(fam.var[t - 1], fam.var[t], rho)
        torch.testing.assert_close(m_star, alpha[t - 1].sqrt() / bt, rtol=1e-9, atol=0)


def test_star_shaped_equivalent_tail_statistic_is_ddpm_state():
    """Theorem 2: with SNR^SS_t = SNR^D_t − SNR^D_{t+1}, (1 − ᾱ^D_t)/sqrt(ᾱ^D_t) · s_t is a DDPM x_t."""
    steps = 6
    _, abar_d = ddpm_family(steps=steps)
    snr_d = abar_d / (1 - abar_d)
    snr_ss = snr_d - torch.cat([snr_d[1:], torch.zeros(1, dtype=F64)])
    abar_ss = snr_ss / (1 + snr_ss)
    fam = Gaussian((1,), mean=abar_ss.sqrt(), var=1 - abar_ss)
    g = torch.Generator().manual_seed(4)
    n = 20000
    x0 = torch.full((n, 1), 0.7, dtype=F64)
    s = torch.zeros_like(x0)
    for t in range(steps, 0, -1):
        s = s + fam.stat(fam.sample(x0, t, g), t)
        g_t = (1 - abar_d[t]) / abar_d[t].sqrt() * s
        z = (g_t - abar_d[t].sqrt() * x0) / (1 - abar_d[t]).sqrt()
        assert stats.kstest(z.flatten().numpy(), "norm").pvalue > 1e-3


def test_head_prior_domain():
    fam = toy(Gaussian, dtype=torch.float32)
    raw = torch.randn(5, 3)
    assert torch.equal(fam.head(raw), raw)
    assert fam.prior_sample(7, dtype=torch.float32).shape == (7, 3)
    fam.check_domain(raw)
    with pytest.raises(DomainError, match="NaN or infinite"):
        fam.check_domain(out_of_domain(fam))
    with pytest.raises(DomainError, match="trailing shape"):
        fam.check_domain(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="var"):
        Gaussian((3,), mean=torch.ones(3, dtype=F64), var=torch.tensor([0.0, 0.5, 1.0], dtype=F64))


def test_float32_inputs_keep_dtype():
    fam = toy(Gaussian)
    x0 = torch.randn(4, 3)
    x = fam.sample(x0, 3)
    assert x.dtype == torch.float32
    assert fam.to_noise(x, x0, 3).dtype == torch.float32
    assert fam.kl(x0, x0 + 0.1, 2).dtype == torch.float32
