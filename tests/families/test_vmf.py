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
from mstar_engine.process.kernel_kl import kernel_kl, learnable
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
    """d ≥ 3: from_noise puts <x, x0> at the Φ(ξ_0)-quantile of its marginal. d = 2: the signed
    angle φ has CDF Φ(ξ_0), i.e. P(|φ'| ≥ |φ|) = 2Φ(−|ξ_0|), with the sign of ξ_0."""
    fam = VonMisesFisher((d,), kappa=torch.tensor(KAPPAS, dtype=F64))
    xi0 = torch.tensor([-3.0, -1.0, 0.0, 0.7, 2.5], dtype=F64)
    x0 = torch.zeros(len(xi0), d, dtype=F64)
    x0[:, 0] = 1.0
    xi = torch.cat([xi0[:, None], torch.ones(len(xi0), d - 2, dtype=F64)], 1)
    for t, k in enumerate(KAPPAS):
        x = fam.from_noise(xi, x0, t)
        theta = torch.atan2(x[:, 1:].norm(dim=1), x[:, 0])  # acos(w) would lose digits near w = 1
        if d == 2:
            nz = xi0 != 0
            assert (torch.sign(x[nz, 1]) == torch.sign(xi0[nz])).all()  # one orientation: Q = I at x0 = e_1
        for th, zi in zip(theta.tolist(), xi0.tolist()):
            got = _w_cdf_quadrature(th, k, d)
            target = 2 * stats.norm.cdf(-abs(zi)) if d == 2 else stats.norm.cdf(zi)
            # both tails are carried in log space: relative accuracy in the smaller one
            assert abs(got - target) < 1e-8 * min(target, 1 - target, 1.0) + 1e-15, (k, zi, got, target)


def _unit(g: torch.Generator, n: int, d: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=g, dtype=F64)
    return x / x.norm(dim=1, keepdim=True)


def _scipy_draws(mu: torch.Tensor, kappa: float, n: int, seed: int) -> torch.Tensor:
    """Independent exact draws of vMF(mu, κ): scipy.stats.vonmises_fisher, or scipy.stats.vonmises
    on the circle."""
    if len(mu) == 2:
        angle = stats.vonmises(kappa, loc=math.atan2(mu[1], mu[0])).rvs(n, random_state=seed)
        return torch.from_numpy(np.stack([np.cos(angle), np.sin(angle)], 1))
    return torch.from_numpy(stats.vonmises_fisher(mu.numpy(), kappa).rvs(n, random_state=seed))


ROUND_TRIP_KAPPAS = [1e-3, 1e-2, 0.3, 3.0, 30.0, 300.0, 3e3, 1e4, 1e5]


@pytest.mark.parametrize("d", [2, 3, 4, 5, 8, 16])
def test_round_trip_both_ways(d):
    """x → ξ → x to 1e-13 and ξ → x → ξ to 1e-9 for κ from 1e-3 to 1e5 and random x0. With x0 = ±e_1
    the frame is exact, and ξ → x → ξ holds to 1e-12 out to |ξ| = 8; elsewhere x stores the
    tangent part x − w x0 with absolute rounding ~1e-16, so far tails of ξ are limited by that."""
    fam = VonMisesFisher((d,), kappa=torch.tensor(ROUND_TRIP_KAPPAS, dtype=F64))
    g = torch.Generator().manual_seed(60 + d)
    n = 2000
    x0 = _unit(g, n, d)
    axis = torch.zeros(n, d, dtype=F64)
    axis[:, 0] = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0).to(F64)
    for t in range(len(ROUND_TRIP_KAPPAS)):
        x = fam.sample(x0, t, g)
        xi = fam.to_noise(x, x0, t)
        assert xi.shape == (n, d - 1) and torch.isfinite(xi).all()
        assert (fam.from_noise(xi, x0, t) - x).abs().max() < 1e-13, t
        xi = torch.randn(n, d - 1, generator=g, dtype=F64)
        assert (fam.to_noise(fam.from_noise(xi, x0, t), x0, t) - xi).abs().max() < 1e-9, t
        xi = (3 * torch.randn(n, d - 1, generator=g, dtype=F64)).clamp(-8, 8)
        assert (fam.to_noise(fam.from_noise(xi, axis, t), axis, t) - xi).abs().max() < 1e-12, t


@pytest.mark.parametrize("d", [2, 3, 4, 5, 8])
def test_to_noise_of_scipy_draws_is_standard_normal(d):
    """Each noise coordinate of exact draws (scipy's samplers) passes a KS test against N(0, 1)
    (p > 1e-4), and the coordinates and their squares are uncorrelated (|r| < 4.5/√n)."""
    kappas = [1e-3, 0.5, 20.0, 1e4]
    fam = VonMisesFisher((d,), kappa=torch.tensor(kappas, dtype=F64))
    g = torch.Generator().manual_seed(70 + d)
    n = 4000
    for t, k in enumerate(kappas):
        mu = _unit(g, 1, d)[0]
        xi = fam.to_noise(_scipy_draws(mu, k, n, seed=10 * d + t), mu.expand(n, d), t).numpy()
        for j in range(d - 1):
            p = stats.kstest(xi[:, j], "norm").pvalue
            assert p > 1e-4, (k, j, p)
        if d > 2:
            off = ~np.eye(d - 1, dtype=bool)
            for z in (xi, xi ** 2):
                r = np.corrcoef(z, rowvar=False)[off]
                assert np.abs(r).max() < 4.5 / math.sqrt(n), (k, r)


@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_from_noise_matches_scipy_in_law(d):
    """from_noise of normals against scipy's exact draws: two-sample KS (p > 1e-4, n = 4000 each) on
    <x, x0> and on <x, p> for a fixed unit p, and the tangent direction has mean 0."""
    kappas = [0.3, 4.0, 200.0, 1e4]
    fam = VonMisesFisher((d,), kappa=torch.tensor(kappas, dtype=F64))
    g = torch.Generator().manual_seed(80 + d)
    n = 4000
    for t, k in enumerate(kappas):
        mu, proj = _unit(g, 2, d)
        x = fam.sample(mu.expand(n, d), t, g)
        ref = _scipy_draws(mu, k, n, seed=100 + 10 * d + t)
        for f in (lambda z: z @ mu, lambda z: z @ proj):
            p = stats.ks_2samp(f(x).numpy(), f(ref).numpy()).pvalue
            assert p > 1e-4, (k, p)
        tangent = x - (x @ mu)[:, None] * mu
        scale = float(tangent.norm(dim=1).mean()) + 1e-300
        assert float(tangent.mean(0).norm()) < 5 * scale / math.sqrt(n)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_far_tails_are_clamped_not_infinite(d):
    """A state far in the tail of q_t(· | x̂0) (a reverse step) maps to finite noise; beyond the
    e^{-700} clamp it comes back in the far tail with the same tangent direction."""
    fam = VonMisesFisher((d,), kappa=torch.tensor([0.01, 50.0, 1e5], dtype=F64))
    x0 = torch.zeros(4, d, dtype=F64)
    x0[:, 0] = 1.0
    x = torch.zeros(4, d, dtype=F64)
    x[0, 0], x[0, 1] = -1.0, 1e-9                    # next to the antipode
    x[1, 0], x[1, 1] = math.cos(2.5), math.sin(2.5)  # 2.5 rad away
    x[2, 0], x[2, 1] = math.cos(0.05), math.sin(0.05)
    x[3, 0] = 1.0                                    # x = x0: any direction, finite noise
    for t in range(3):
        xi = fam.to_noise(x, x0, t)
        assert torch.isfinite(xi).all() and (xi.abs() < 38).all()
        back = fam.from_noise(xi, x0, t)
        assert (back[:3, 1] > 0).all()  # same tangent direction
        torch.testing.assert_close(back[3], x0[3], rtol=0, atol=1e-12)
        if t == 0:
            torch.testing.assert_close(back, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3, 8])
def test_coupled_kernel_keeps_the_marginal_and_rho_one_is_deterministic(d):
    fam = toy(VonMisesFisher, dim=d)
    g = torch.Generator().manual_seed(30 + d)
    n = 4000
    x0 = toy_data(fam, 1, g).expand(n, d)
    proj = _unit(g, 1, d)[0]
    t = 3
    x_t = fam.sample(x0, t, g)
    direct = fam.sample(x0, t - 1, g)
    for rho in (0.0, 0.5, 0.99, 1.0):
        x_prev = coupled_step(fam, x_t, x0, t, rho, g)
        for f in (lambda z: (z * x0).sum(1), lambda z: z @ proj):
            assert stats.ks_2samp(f(x_prev).numpy(), f(direct).numpy()).pvalue > 1e-3, rho
    again = coupled_step(fam, x_t, x0, t, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(coupled_step(fam, x_t, x0, t, 1.0, torch.Generator().manual_seed(2)), again)
    torch.testing.assert_close(again, fam.from_noise(fam.to_noise(x_t, x0, t), x0, t - 1), rtol=0, atol=0)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_noise_maps_are_differentiable(d):
    """gradcheck (float64) of from_noise w.r.t. ξ and of to_noise w.r.t. x, away from the poles."""
    kappas = [0.05, 2.0, 40.0, 3e3]
    fam = VonMisesFisher((d,), kappa=torch.tensor(kappas, dtype=F64))
    g = torch.Generator().manual_seed(90 + d)
    x0 = _unit(g, 3, d)
    for t in range(len(kappas)):
        xi = (4 * torch.rand(3, d - 1, generator=g, dtype=F64) - 2).requires_grad_()
        assert torch.autograd.gradcheck(lambda z: fam.from_noise(z, x0, t), (xi,), eps=1e-6, atol=1e-6, rtol=1e-4)
        x = fam.from_noise(xi.detach(), x0, t).requires_grad_()
        assert torch.autograd.gradcheck(lambda z: fam.to_noise(z, x0, t), (x,), eps=1e-7, atol=1e-6, rtol=1e-4)


def _kernel_kl_quadrature(fam, a_t: float, a0: float, a1: float, t: int, rho: float) -> float:
    """KL(k_t(· | x_t, x0) ‖ k_t(· | x_t, x̂0)) on the circle by quadrature over the angle of y, with
    scipy's von Mises CDF: ξ(y) = Φ⁻¹(F(o·wrap(β − α))) in the orientation o of each frame."""
    def frame(alpha):
        x0 = torch.tensor([[math.cos(alpha), math.sin(alpha)]], dtype=F64)
        y = fam.from_noise(torch.ones(1, 1, dtype=F64), x0, t)[0]
        o = math.copysign(1.0, float(x0[0, 0] * y[1] - x0[0, 1] * y[0]))
        return lambda beta, k: stats.norm.ppf(stats.vonmises.cdf(o * ((beta - alpha + math.pi) % (2 * math.pi) - math.pi), k))

    k_t, k_s = float(fam.kappa[t]), float(fam.kappa[t - 1])
    var = 1 - rho * rho

    def log_kernel(beta, alpha, xi_map):
        z = xi_map(beta, k_s)
        zt = xi_map(a_t, k_t)
        return (stats.vonmises.logpdf(beta, k_s, loc=alpha) - 0.5 * (z - rho * zt) ** 2 / var
                - 0.5 * math.log(var) + 0.5 * z * z)

    f0, f1 = frame(a0), frame(a1)

    def integrand(beta):
        l0 = log_kernel(beta, a0, f0)
        return 0.0 if l0 < -700 or not math.isfinite(l0) else math.exp(l0) * (l0 - log_kernel(beta, a1, f1))

    cuts = sorted({-math.pi, math.pi, *[(c + math.pi) % (2 * math.pi) - math.pi for c in (a0, a1, a0 + math.pi, a1 + math.pi)]})
    return sum(integrate.quad(integrand, lo, hi, limit=400, epsabs=1e-11)[0] for lo, hi in zip(cuts, cuts[1:]))


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.95])
def test_kernel_kl_monte_carlo_matches_quadrature_on_the_circle(rho):
    """The learned coupling's Monte Carlo kernel KL (exact copula density of the bijective map)
    against 1-D quadrature with scipy's von Mises CDF; its gradient w.r.t. ρ is finite, and it is
    exactly 0 when x̂0 = x0."""
    fam = VonMisesFisher((2,), kappa=torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=F64))
    assert learnable(fam) and fam.noise_shape == (1,)
    t, n = 2, 40000
    a_t, a0, a1 = 0.4, 0.1, -0.5
    circle = lambda a: torch.tensor([[math.cos(a), math.sin(a)]], dtype=F64).expand(n, 2)
    r = torch.tensor(rho, dtype=F64, requires_grad=True)
    est = kernel_kl(fam, circle(a_t), circle(a0), circle(a1), t, r, torch.Generator().manual_seed(5))
    ref = _kernel_kl_quadrature(fam, a_t, a0, a1, t, rho)
    mc, se = float(est.detach().mean()), float(est.detach().std()) / math.sqrt(n)
    assert abs(mc - ref) < 4 * se + 1e-9, (mc, se, ref)
    est.mean().backward()
    assert torch.isfinite(r.grad)
    same = kernel_kl(fam, circle(a_t)[:50], circle(a0)[:50], circle(a0)[:50], t, rho, torch.Generator().manual_seed(6))
    assert same.abs().max() < 1e-9


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


def test_kernel_kl_is_continuous_in_the_prediction():
    """The noise frame is continuous in x0 away from e_1: two nearby predictions on either side of
    the great circle x0_0 = 0 (where a sign-switching reflection would flip the frame) have a tiny
    kernel KL, like two nearby predictions elsewhere (regression: it was 2.85 here)."""
    from mstar_engine.process.kernel_kl import kernel_kl
    fam = VonMisesFisher((3,), kappa=torch.tensor(KAPPAS, dtype=F64))
    g = torch.Generator().manual_seed(3)
    n = 20000
    x0 = torch.nn.functional.normalize(torch.tensor([[1e-4, 0.6, 0.8]], dtype=F64)).expand(n, 3)
    x0_hat = torch.nn.functional.normalize(torch.tensor([[-1e-4, 0.6, 0.8]], dtype=F64)).expand(n, 3)
    x_t = fam.sample(x0, 2, g)
    kl = kernel_kl(fam, x_t, x0, x0_hat, 2, torch.tensor(0.9, dtype=F64), generator=g)
    assert float(kl.mean()) < 1e-3
