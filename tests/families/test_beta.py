"""Beta family oracles against scipy (notes §3.2): density, KL, noise map (x = F⁻¹(Φ(ξ))), extreme ν."""
import numpy as np
import pytest
import scipy.special as sc
import torch
from scipy import integrate, stats

from mstar_engine.families.base import DomainError
from mstar_engine.families.beta import Beta
from tests.families.fixtures import toy

F64 = torch.float64
NUS = [1e-3, 0.37, 1.0, 126.0, 1e4]
X0S = [1e-6, 0.01, 0.5, 0.93, 1 - 1e-6]


def fam_with(nus) -> Beta:
    return Beta((1,), nu=torch.tensor(nus, dtype=F64))


def scipy_beta_ppf_normal(xi, a, b):
    """F⁻¹_{a,b}(Φ(ξ)) from the tail that keeps precision (scipy, the independent oracle)."""
    return np.where(xi <= 0, sc.betaincinv(a, b, sc.ndtr(xi)), sc.betainccinv(a, b, sc.ndtr(-xi)))


def grid():
    nu, x0 = np.meshgrid(np.arange(len(NUS)), X0S, indexing="ij")
    return torch.tensor(nu.ravel()), torch.tensor(x0.ravel(), dtype=F64)[:, None]


def test_log_prob_matches_scipy():
    fam = fam_with(NUS)
    t, x0 = grid()
    x = fam.sample(x0, t, torch.Generator().manual_seed(0))
    nu = np.array(NUS)[t.numpy()]
    a, b = 1 + nu * x0[:, 0].numpy(), 1 + nu * (1 - x0[:, 0].numpy())
    ref = stats.beta.logpdf(x[:, 0].numpy(), a, b)
    assert np.allclose(fam.log_prob(x, x0, t).numpy(), ref, rtol=1e-10, atol=1e-10)


def _kl_scipy(a0, b0, a1, b1):
    """The general Beta KL (no equal-total assumption), written with scipy."""
    return (sc.betaln(a1, b1) - sc.betaln(a0, b0) + (a0 - a1) * sc.digamma(a0) + (b0 - b1) * sc.digamma(b0)
            + (a1 - a0 + b1 - b0) * sc.digamma(a0 + b0))


def test_kl_matches_scipy_formula_and_integration():
    fam = fam_with(NUS)
    t, x0 = grid()
    x0_hat = torch.flip(x0, [0]).clone()
    x0_hat[::3] = 0.31
    kl = fam.kl(x0, x0_hat, t).numpy()
    nu = np.array(NUS)[t.numpy()]
    p, q = x0[:, 0].numpy(), x0_hat[:, 0].numpy()
    ref = _kl_scipy(1 + nu * p, 1 + nu * (1 - p), 1 + nu * q, 1 + nu * (1 - q))
    assert np.allclose(kl, ref, rtol=1e-9, atol=1e-9)
    # independent check by quadrature where the densities are smooth enough for quad
    for i in np.flatnonzero(nu <= 126):
        a0, b0, a1, b1 = 1 + nu[i] * p[i], 1 + nu[i] * (1 - p[i]), 1 + nu[i] * q[i], 1 + nu[i] * (1 - q[i])
        f = lambda x: stats.beta.pdf(x, a0, b0) * (stats.beta.logpdf(x, a0, b0) - stats.beta.logpdf(x, a1, b1))
        val = integrate.quad(f, 0, 1, points=[p[i]], limit=200, epsabs=1e-11, epsrel=1e-9)[0]
        assert kl[i] == pytest.approx(val, rel=1e-6, abs=1e-9), (nu[i], p[i], q[i])


def test_kl_near_equality_has_no_cancellation():
    """KL ≈ ½ ν² δ² (ψ'(α) + ψ'(β)) for x̂0 = x0 + δ; the naive lnB difference at ν = 1e4 would
    return rounding noise of order 1e-11 instead of ~1e-6."""
    fam = fam_with([1e4])
    x0 = torch.tensor([[0.3], [1e-3]], dtype=F64)
    delta = 1e-7
    kl = fam.kl(x0, x0 + delta, 0).numpy()
    a, b = 1 + 1e4 * x0[:, 0].numpy(), 1 + 1e4 * (1 - x0[:, 0].numpy())
    approx = 0.5 * (1e4 * delta) ** 2 * (sc.polygamma(1, a) + sc.polygamma(1, b))
    assert np.allclose(kl, approx, rtol=1e-3)


def test_kl_rescaled_divides_by_total_concentration():
    fam = fam_with(NUS)
    t, x0 = grid()
    x0_hat = torch.full_like(x0, 0.4)
    nu = torch.tensor(NUS, dtype=F64)[t]
    assert torch.allclose(fam.kl_rescaled(x0, x0_hat, t), fam.kl(x0, x0_hat, t) / (nu + 2), rtol=1e-14)


def test_noise_map_is_the_beta_quantile_of_the_normal_cdf():
    fam = fam_with(NUS)
    t, x0 = grid()
    assert fam.noise_shape == fam.event_shape and not fam.inverse_uses_aux
    xi = torch.randn((t.shape[0], 1), generator=torch.Generator().manual_seed(1), dtype=F64) * 3
    x = fam.from_noise(xi, x0, t)[:, 0].numpy()
    nu = np.array(NUS)[t.numpy()]
    a, b = 1 + nu * x0[:, 0].numpy(), 1 + nu * (1 - x0[:, 0].numpy())
    ref = scipy_beta_ppf_normal(xi[:, 0].numpy(), a, b)
    assert np.allclose(x, ref, rtol=1e-10, atol=0)  # 1 − x: tests/numerics/test_incomplete_beta.py


def test_to_noise_is_deterministic_and_inverts_from_noise():
    fam = fam_with([0.5, 40.0, 9e3])
    x0 = torch.tensor([[0.2], [0.7], [0.999]], dtype=F64)
    t = torch.arange(3)
    xi = torch.tensor([[-2.5], [0.3], [4.0]], dtype=F64)
    x = fam.from_noise(xi, x0, t)
    back = [fam.to_noise(x, x0, t, torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert torch.equal(back[0], back[1]) and torch.equal(back[0], fam.to_noise(x, x0, t))
    assert torch.allclose(back[0], xi, rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_extreme_nu_is_stable(dtype):
    fam = fam_with(NUS)
    t, x0 = grid()
    t, x0 = t.repeat(200), x0.repeat(200, 1).to(dtype)
    g = torch.Generator().manual_seed(2)
    x = fam.sample(x0, t, g)
    fam.check_domain(x)
    assert x.dtype == dtype
    xi = fam.to_noise(x, x0, t, g)
    back = fam.from_noise(xi, x0, t)
    for v in (xi, back, fam.log_prob(x, x0, t), fam.stat(x, t), fam.kl(x0, 1 - x0, t),
              fam.log_normalizer(x0, t)):
        assert torch.isfinite(v).all()
    assert (fam.kl(x0, 1 - x0, t) >= 0).all()
    tol = 1e-9 if dtype == F64 else 1e-6
    assert ((back - x).abs() <= tol).all(), (back - x).abs().max()


def test_sharp_marginal_concentrates_at_x0():
    fam = fam_with([1e4])
    x0 = torch.full((4000, 1), 0.2, dtype=F64)
    x = fam.sample(x0, 0, torch.Generator().manual_seed(3))
    a, b = 1 + 1e4 * 0.2, 1 + 1e4 * 0.8
    assert x.mean().item() == pytest.approx(a / (a + b), abs=5 * np.sqrt(a * b / (a + b) ** 3 / 4000))


def test_prior_is_uniform_and_head_is_sigmoid():
    fam = toy(Beta)
    p = fam.prior_sample(4000, torch.Generator().manual_seed(4), dtype=F64)
    assert stats.kstest(p.reshape(-1).numpy(), "uniform").pvalue > 1e-3
    raw = torch.tensor([[-3.0, 0.0, 2.0], [-800.0, 0.0, 800.0]], dtype=F64)
    out = fam.head(raw)
    assert torch.allclose(out[0], torch.sigmoid(raw[0]))
    assert 0 < out[1, 0] and out[1, 2] < 1


def test_stat_and_features():
    fam = fam_with([2.0, 5.0])
    x = torch.tensor([[0.25], [0.9]], dtype=F64)
    assert torch.allclose(fam.stat(x, torch.tensor([0, 1])), torch.tensor([[2 * np.log(1 / 3)], [5 * np.log(9)]], dtype=F64))
    assert torch.equal(fam.features(x), x)


@pytest.mark.parametrize("bad", [[0.0, 0.5], [0.5, 1.0], [float("nan"), 0.5], [-0.1, 0.5]])
def test_check_domain_rejects_boundary_and_outside(bad):
    fam = Beta((2,), nu=torch.ones(3, dtype=F64))
    with pytest.raises(DomainError, match="beta"):
        fam.check_domain(torch.tensor([bad], dtype=F64), "pixels")


def test_schedule_validation():
    with pytest.raises(ValueError, match="nu"):
        Beta((2,), nu=torch.tensor([1.0, -1.0], dtype=F64))


def test_kl_gradient_in_prediction():
    fam = fam_with([0.5, 40.0, 1e4])
    x0 = torch.tensor([[0.2], [0.7], [0.5]], dtype=F64)
    x0_hat = torch.tensor([[0.6], [0.7 + 1e-6], [0.45]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q: fam.kl(x0, q, torch.arange(3)), (x0_hat,))
