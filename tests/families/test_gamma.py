"""Gamma family oracles against scipy (notes §3.7): density, KL, noise map, extreme schedules."""
import numpy as np
import pytest
import scipy.special as sc
import torch
from scipy import integrate, stats

from mstar_engine.families.base import DomainError
from mstar_engine.families.gamma import Gamma
from tests.families.fixtures import toy

F64 = torch.float64
SHAPES = [1e-3, 0.1, 1.0, 40.0, 1e4]
XIS = [0.0, 0.5, 0.9, 1.0]
X0S = [1e-4, 0.3, 1.0, 7.0, 1e3]


def grid():
    """A family whose steps run over every (shape, xi) pair, and x0 over X0S at every step."""
    a, xi = np.meshgrid(SHAPES, XIS, indexing="ij")
    fam = Gamma((1,), shape=torch.tensor(a.ravel(), dtype=F64), xi=torch.tensor(xi.ravel(), dtype=F64))
    steps = fam.steps + 1
    t = torch.arange(steps).repeat_interleave(len(X0S))
    x0 = torch.tensor(X0S, dtype=F64).repeat(steps)[:, None]
    return fam, t, x0


def rate(fam, t, x0):
    a, xi = fam.shape[t].numpy(), fam.xi[t].numpy()
    return a, a * (xi + (1 - xi) / x0[:, 0].numpy())


def test_log_prob_matches_scipy():
    fam, t, x0 = grid()
    x = fam.sample(x0, t, torch.Generator().manual_seed(0))
    a, b = rate(fam, t, x0)
    ref = stats.gamma.logpdf(x[:, 0].numpy(), a, scale=1 / b)
    assert np.allclose(fam.log_prob(x, x0, t).numpy(), ref, rtol=1e-10, atol=1e-9)


def test_kl_matches_formula_and_integration():
    fam, t, x0 = grid()
    x0_hat = torch.flip(x0, [0]) * 1.3
    kl = fam.kl(x0, x0_hat, t).numpy()
    a, b0 = rate(fam, t, x0)
    _, b1 = rate(fam, t, x0_hat)
    # general Gamma KL with equal shapes: (α−α)ψ(α) − lnΓ(α) + lnΓ(α) + α(log b0 − log b1) + α (b1 − b0)/b0
    ref = a * (np.log(b0) - np.log(b1)) + a * (b1 - b0) / b0
    assert np.allclose(kl, ref, rtol=1e-9, atol=1e-12)
    for i in np.flatnonzero((a >= 1) & (a <= 40)):
        f = lambda x: stats.gamma.pdf(x, a[i], scale=1 / b0[i]) * (
            stats.gamma.logpdf(x, a[i], scale=1 / b0[i]) - stats.gamma.logpdf(x, a[i], scale=1 / b1[i]))
        hi = stats.gamma.ppf(1 - 1e-15, a[i], scale=1 / b0[i])
        val = integrate.quad(f, 0, hi, limit=400, epsabs=1e-12, epsrel=1e-10)[0]
        assert kl[i] == pytest.approx(val, rel=1e-6, abs=1e-9), i


def test_kl_near_equality_has_no_cancellation():
    """KL = α (d − log(1 + d)) ≈ α d²/2 for tiny d; the naive form cancels to rounding noise."""
    fam = Gamma((1,), shape=torch.tensor([1e4], dtype=F64), xi=torch.tensor([0.2], dtype=F64))
    x0 = torch.tensor([[2.0]], dtype=F64)
    x0_hat = x0 * (1 + 1e-9)
    d = 0.8 * (2.0 - 2.0 * (1 + 1e-9)) / (2.0 * (1 + 1e-9) * (0.2 * 2.0 + 0.8))
    assert fam.kl(x0, x0_hat, 0).item() == pytest.approx(1e4 * d * d / 2, rel=1e-6)


def test_noise_map_matches_scipy_ppf():
    fam, t, x0 = grid()
    xi = 3 * torch.randn((t.shape[0], 1), generator=torch.Generator().manual_seed(1), dtype=F64)
    x = fam.from_noise(xi, x0, t)[:, 0].numpy()
    a, b = rate(fam, t, x0)
    z = xi[:, 0].numpy()
    g = np.where(z <= 0, sc.gammaincinv(a, sc.ndtr(z)), sc.gammainccinv(a, sc.ndtr(-z)))
    ok = g > 1e-290                         # shape 1e-3: most quantiles underflow in float64
    assert np.allclose(x[ok], g[ok] / b[ok], rtol=1e-9, atol=0)
    assert (x[~ok] > 0).all()               # clamped at the smallest normal number, still in the domain


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_extreme_schedules_are_stable(dtype):
    fam, t, x0 = grid()
    t, x0 = t.repeat(100), x0.repeat(100, 1).to(dtype)
    g = torch.Generator().manual_seed(2)
    x = fam.sample(x0, t, g)
    fam.check_domain(x)
    xi = fam.to_noise(x, x0, t, g)
    for v in (xi, fam.from_noise(xi, x0, t), fam.log_prob(x, x0, t), fam.stat(x, t), fam.kl(x0, 1 / x0, t),
              fam.log_normalizer(x0, t)):
        assert torch.isfinite(v).all()
    assert (fam.kl(x0, 1 / x0, t) >= 0).all()


def test_round_trip_where_representable():
    fam, t, x0 = grid()
    keep = fam.shape[t] >= 0.1              # shape 1e-3 draws underflow below float64 and are clamped
    t, x0 = t[keep].repeat(50), x0[keep].repeat(50, 1)
    x = fam.sample(x0, t, torch.Generator().manual_seed(3))
    back = fam.from_noise(fam.to_noise(x, x0, t), x0, t)
    assert ((back - x).abs() / x).max() < 1e-10


def test_mean_moves_from_x0_to_one():
    fam = Gamma((1,), shape=torch.tensor([50.0, 50.0, 50.0], dtype=F64), xi=torch.tensor([0.0, 0.5, 1.0], dtype=F64))
    x0 = torch.full((4000, 1), 4.0, dtype=F64)
    g = torch.Generator().manual_seed(4)
    for t, mean in ((0, 4.0), (1, 1 / (0.5 + 0.5 / 4.0)), (2, 1.0)):
        x = fam.sample(x0, t, g)
        se = mean / np.sqrt(50 * 4000)
        assert x.mean().item() == pytest.approx(mean, abs=5 * se), t


def test_prior_is_q_T_at_one():
    fam = toy(Gamma)
    p = fam.prior_sample(4000, torch.Generator().manual_seed(5), dtype=F64)
    a = fam.shape[-1].item()
    assert stats.kstest(p.reshape(-1).numpy(), stats.gamma(a, scale=1 / a).cdf).pvalue > 1e-3


def test_kl_rescaled_head_stat():
    fam, t, x0 = grid()
    x0_hat = x0 * 0.5
    assert torch.allclose(fam.kl_rescaled(x0, x0_hat, t), fam.kl(x0, x0_hat, t) / fam.shape[t], rtol=1e-12)
    raw = torch.tensor([[-60.0], [0.0], [60.0]])
    out = fam.head(raw)
    assert (out >= Gamma.head_floor).all() and torch.isfinite(out).all()
    x = torch.tensor([[2.0]], dtype=F64)
    assert fam.stat(x, 5).item() == pytest.approx(fam.shape[5].item() * (1 - fam.xi[5].item()) * 2.0)
    assert fam.features(torch.tensor([[4.0]], dtype=F64)).item() == -0.25


def test_check_domain_and_schedule_validation():
    fam = toy(Gamma)
    for bad in ([[1.0, 0.0]], [[1.0, -2.0]], [[np.inf, 1.0]]):
        with pytest.raises(DomainError, match="gamma"):
            fam.check_domain(torch.tensor(bad, dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        Gamma((1,), shape=torch.tensor([1.0, 0.0]), xi=torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="xi"):
        Gamma((1,), shape=torch.tensor([1.0, 1.0]), xi=torch.tensor([0.0, 1.5]))


def test_noise_maps_are_differentiable():
    """The Monte Carlo copula kernel KL (MATH.md §2, ``learned`` coupling) differentiates through
    from_noise in ξ and x̂0 and through to_noise in x and x̂0; check against finite differences."""
    fam = Gamma((2,), shape=torch.tensor([0.3, 25.0], dtype=F64), xi=torch.tensor([0.2, 0.6], dtype=F64))
    g = torch.Generator().manual_seed(6)
    # moderate quantiles: finite differences of x ↦ ξ are inaccurate where x ≈ 0 at shape 0.3
    xi = torch.tensor([[0.4, -1.2], [1.3, 0.1], [0.8, 2.0]], dtype=F64, requires_grad=True)
    x0 = (torch.rand((3, 2), generator=g, dtype=F64) + 0.5).requires_grad_(True)
    t = torch.tensor([0, 1, 1])
    assert torch.autograd.gradcheck(lambda a, b: fam.from_noise(a, b, t), (xi, x0))
    x = fam.from_noise(xi, x0, t).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: fam.to_noise(a, b, t), (x, x0))
