"""von Mises–Fisher family: Bessel ratio, normaliser, inverse CDF, sampler and KL oracles."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from mstar_engine.families.base import DomainError
from mstar_engine.families.vmf import VonMisesFisher
from mstar_engine.process.kernel import coupled_step
from tests.families.fixtures import out_of_domain, toy, toy_data

F64 = torch.float64
KAPPAS = [1e-4, 1e-2, 0.5, 3.0, 30.0, 1e3, 1e5]


@pytest.mark.parametrize("d", [2, 3, 5, 16])
def test_log_prob_matches_scipy(d):
    fam = VonMisesFisher((d,), kappa=torch.tensor(KAPPAS, dtype=F64))
    g = torch.Generator().manual_seed(d)
    mu = toy_data(fam, 1, g)[0]
    x = toy_data(fam, 4, g)
    for t, k in enumerate(KAPPAS):
        ref = stats.vonmises_fisher(mu.numpy(), k).logpdf(x.numpy())
        ours = fam.log_prob(x, mu.expand(4, d), t).numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def _w_cdf_quadrature(theta: float, kappa: float, d: int) -> float:
    """P(<x, x0> ≤ cos θ) under vMF_d(κ) by quadrature in θ (density ∝ e^{κ(cos θ − 1)} sin^{d−2} θ)."""
    f = lambda th: math.exp(-2 * kappa * math.sin(th / 2) ** 2) * math.sin(th) ** (d - 2)
    scale = min(math.pi, 1 / math.sqrt(kappa))
    cuts = [0.0] + [c for c in (scale / 4, scale, 4 * scale, 16 * scale) if c < math.pi] + [math.pi]

    def integral(lo, hi):
        pts = [lo] + [c for c in cuts if lo < c < hi] + [hi]
        return sum(integrate.quad(f, a, b, epsabs=0, epsrel=1e-12, limit=200)[0] for a, b in zip(pts, pts[1:]))

    return integral(theta, math.pi) / integral(0.0, math.pi)


@pytest.mark.parametrize("d", [2, 3, 5, 16])
def test_inverse_cdf_matches_quadrature(d):
    """from_noise puts <x, x0> at the Φ(ξ_0)-quantile of its marginal."""
    fam = VonMisesFisher((d,), kappa=torch.tensor(KAPPAS, dtype=F64))
    xi0 = torch.tensor([-3.0, -1.0, 0.0, 0.7, 2.5], dtype=F64)
    x0 = torch.zeros(len(xi0), d, dtype=F64)
    x0[:, 0] = 1.0
    xi = torch.cat([xi0[:, None], torch.ones(len(xi0), d - 1, dtype=F64)], 1)
    for t, k in enumerate(KAPPAS):
        x = fam.from_noise(xi, x0, t)
        theta = torch.atan2(x[:, 1:].norm(dim=1), x[:, 0])  # acos(w) would lose digits near w = 1
        for th, zi in zip(theta.tolist(), xi0.tolist()):
            target = stats.norm.cdf(zi)
            got = _w_cdf_quadrature(th, k, d)
            # both tails are carried in log space: relative accuracy in the smaller one
            assert abs(got - target) < 1e-8 * min(target, 1 - target), (k, zi, got, target)


@pytest.mark.parametrize("d", [3, 5])
def test_samples_match_scipy_sampler(d):
    fam = VonMisesFisher((d,), kappa=torch.tensor([0.3, 4.0, 200.0], dtype=F64))
    g = torch.Generator().manual_seed(10 + d)
    mu = toy_data(fam, 1, g)
    n = 4000
    for t, k in enumerate([0.3, 4.0, 200.0]):
        x = fam.sample(mu.expand(n, d), t, g)
        ref = stats.vonmises_fisher(mu[0].numpy(), k).rvs(n, random_state=t)
        assert stats.ks_2samp((x @ mu[0]).numpy(), ref @ mu[0].numpy()).pvalue > 1e-3
        # the tangent direction is uniform: a fixed tangent coordinate is symmetric around 0
        assert abs(float((x - (x @ mu[0])[:, None] * mu).mean(0).norm())) < 4 * math.sqrt(1 / n)


@pytest.mark.parametrize("d", [2, 3, 16])
def test_round_trip_and_normality_at_extreme_kappas(d):
    fam = VonMisesFisher((d,), kappa=torch.tensor(KAPPAS, dtype=F64))
    g = torch.Generator().manual_seed(20 + d)
    n = 3000
    x0 = toy_data(fam, n, g)
    for t in range(len(KAPPAS)):
        x = fam.sample(x0, t, g)
        assert (x.norm(dim=1) - 1).abs().max() < 1e-14
        xi = fam.to_noise(x, x0, t, g)
        assert stats.kstest(xi.flatten().numpy(), "norm").pvalue > 1e-3
        torch.testing.assert_close(fam.from_noise(xi, x0, t), x, rtol=0, atol=1e-13)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_far_tails_are_clamped_not_infinite(d):
    """A state far in the tail of q_t(· | x̂0) (a reverse step) maps to finite noise; beyond the
    e^{-700} clamp it comes back in the far tail with the same tangent direction."""
    fam = VonMisesFisher((d,), kappa=torch.tensor([0.01, 50.0, 1e5], dtype=F64))
    x0 = torch.zeros(3, d, dtype=F64)
    x0[:, 0] = 1.0
    x = torch.zeros(3, d, dtype=F64)
    x[0, 0], x[0, 1] = -1.0, 1e-9                    # next to the antipode
    x[1, 0], x[1, 1] = math.cos(2.5), math.sin(2.5)  # 2.5 rad away
    x[2, 0], x[2, 1] = math.cos(0.05), math.sin(0.05)
    for t in range(3):
        xi = fam.to_noise(x, x0, t, torch.Generator().manual_seed(t))
        assert torch.isfinite(xi).all() and (xi.abs() < 38).all()
        back = fam.from_noise(xi, x0, t)
        assert (back[:, 1] > 0).all()  # same tangent direction
        if t == 0:
            torch.testing.assert_close(back, x, rtol=0, atol=1e-12)


def test_kernel_preserves_marginal():
    fam = toy(VonMisesFisher, dim=4)
    g = torch.Generator().manual_seed(30)
    n = 4000
    x0 = toy_data(fam, 1, g).expand(n, 4)
    t = 3
    x_t = fam.sample(x0, t, g)
    direct = (fam.sample(x0, t - 1, g) * x0).sum(1).numpy()
    for rho in (0.0, 0.5, 0.99, 1.0):
        w = (coupled_step(fam, x_t, x0, t, rho, g) * x0).sum(1).numpy()
        assert stats.ks_2samp(w, direct).pvalue > 1e-3


@pytest.mark.parametrize("d", [3, 6])
def test_kl_closed_form_and_monte_carlo(d):
    fam = toy(VonMisesFisher, dim=d)
    g = torch.Generator().manual_seed(40 + d)
    x0, x0_hat = toy_data(fam, 1, g), toy_data(fam, 1, g)
    n = 20000
    for t in (2, 5, 8):
        k = float(fam.kappa[t])
        kl = float(fam.kl(x0, x0_hat, t))
        a_d = special.ive(d / 2, k) / special.ive(d / 2 - 1, k)
        assert kl == pytest.approx(k * a_d * (1 - float(x0 @ x0_hat[0])), rel=1e-10)
        x = fam.sample(x0.expand(n, d), t, g)
        diff = fam.log_prob(x, x0.expand(n, d), t) - fam.log_prob(x, x0_hat.expand(n, d), t)
        assert abs(float(diff.mean()) - kl) < 4 * float(diff.std()) / math.sqrt(n) + 1e-12
    assert float(fam.kl(x0, x0, 3)) == 0.0
    assert float(fam.kl_rescaled(x0, -x0, 3)) == pytest.approx(2.0, rel=1e-12)
    assert float(fam.kl_rescaled(x0, x0_hat, 3)) == pytest.approx(1 - float(x0 @ x0_hat[0]), rel=1e-12)


def test_exponential_family_identity():
    fam = toy(VonMisesFisher)
    g = torch.Generator().manual_seed(50)
    x0, x0b, x = toy_data(fam, 4, g), toy_data(fam, 4, g), toy_data(fam, 4, g)
    for t in range(fam.steps + 1):
        rest_a = fam.log_prob(x, x0, t) - ((fam.features(x0) * fam.stat(x, t)).sum(1) - fam.log_normalizer(x0, t))
        rest_b = fam.log_prob(x, x0b, t) - ((fam.features(x0b) * fam.stat(x, t)).sum(1) - fam.log_normalizer(x0b, t))
        torch.testing.assert_close(rest_a, rest_b, rtol=0, atol=1e-10)


def test_head_prior_domain():
    fam = toy(VonMisesFisher, dim=3)
    raw = torch.tensor([[0.0, 0.0, 0.0], [50.0, -50.0, 3.0], [1e-30, 0.0, 0.0]], requires_grad=True)
    out = fam.head(raw)
    fam.check_domain(out.detach(), "head output")
    out.sum().backward()
    assert torch.isfinite(raw.grad).all()
    prior = fam.prior_sample(5000, torch.Generator().manual_seed(0), dtype=F64)
    fam.check_domain(prior)
    assert prior.mean(0).norm() < 0.06
    with pytest.raises(DomainError, match="norm"):
        fam.check_domain(out_of_domain(fam))
    with pytest.raises(DomainError, match="length 3"):
        fam.check_domain(torch.ones(2, 4) / 2)
    with pytest.raises(ValueError):
        VonMisesFisher((1,), kappa=torch.ones(3, dtype=F64))
