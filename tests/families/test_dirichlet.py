"""Dirichlet family oracles against scipy and torch.distributions (notes §3.3, pitfall §8.4)."""
import numpy as np
import pytest
import scipy.special as sc
import torch
from scipy import stats

from mstar_engine.families.base import DomainError
from mstar_engine.families.beta import Beta
from mstar_engine.families.dirichlet import Dirichlet

F64 = torch.float64
NUS = [1e-3, 1.0, 56.3, 2000.0, 1e4]


def fam_with(nus, k=3) -> Dirichlet:
    return Dirichlet((k,), nu=torch.tensor(nus, dtype=F64))


def some_x0(n, seed=0):
    """n points on the 2-simplex, the first one next to a vertex."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.softmax(2.5 * torch.randn((n, 3), generator=g, dtype=F64), -1)
    x0[0] = torch.tensor([1 - 2e-6, 1e-6, 1e-6], dtype=F64)
    return x0


def test_log_prob_matches_scipy():
    fam = fam_with(NUS)
    x0 = some_x0(50)
    t = torch.arange(50) % len(NUS)
    x = fam.sample(x0, t, torch.Generator().manual_seed(1))
    ours = fam.log_prob(x, x0, t).numpy()
    nu = np.array(NUS)[t.numpy()]
    for i in range(50):
        xi = x[i].numpy() / x[i].numpy().sum()
        ref = stats.dirichlet.logpdf(xi, 1 + nu[i] * x0[i].numpy())
        assert ours[i] == pytest.approx(ref, rel=1e-9, abs=1e-8), i


def test_kl_matches_torch_distributions_and_scipy():
    fam = fam_with(NUS)
    x0, x0_hat = some_x0(40, seed=2), some_x0(40, seed=3)
    x0_hat[5] = x0[5] + torch.tensor([1e-9, -1e-9, 0.0], dtype=F64)
    t = torch.arange(40) % len(NUS)
    ours = fam.kl(x0, x0_hat, t)
    nu = torch.tensor(NUS, dtype=F64)[t][:, None]
    ref = torch.distributions.kl_divergence(torch.distributions.Dirichlet(1 + nu * x0),
                                            torch.distributions.Dirichlet(1 + nu * x0_hat))
    assert torch.allclose(ours, ref, rtol=1e-8, atol=1e-9)
    a0, a1 = (1 + nu * x0).numpy(), (1 + nu * x0_hat).numpy()
    ref2 = (sc.gammaln(a0.sum(1)) - sc.gammaln(a1.sum(1)) - (sc.gammaln(a0) - sc.gammaln(a1)).sum(1)
            + ((a0 - a1) * (sc.digamma(a0) - sc.digamma(a0.sum(1, keepdims=True)))).sum(1))
    assert np.allclose(ours.numpy(), ref2, rtol=1e-8, atol=1e-9)


def test_kl_near_equality_has_no_cancellation():
    """KL ≈ ½ ν² Σ_k ψ'(α_k) δ_k² for a direction δ on the simplex (Σ δ = 0)."""
    fam = fam_with([1e4])
    x0 = torch.tensor([[0.2, 0.3, 0.5]], dtype=F64)
    delta = torch.tensor([[1e-7, -3e-7, 2e-7]], dtype=F64)
    a = (1 + 1e4 * x0).numpy()
    approx = 0.5 * 1e8 * (sc.polygamma(1, a) * delta.numpy() ** 2).sum()
    assert fam.kl(x0, x0 + delta, 0).item() == pytest.approx(approx, rel=1e-3)


def test_two_components_reduce_to_beta():
    nus = torch.tensor([0.5, 30.0, 3000.0], dtype=F64)
    dirichlet, beta = Dirichlet((2,), nu=nus), Beta((1,), nu=nus)
    p = torch.tensor([[0.1], [0.5], [0.97]], dtype=F64)
    q = torch.tensor([[0.4], [0.45], [0.9]], dtype=F64)
    x = torch.tensor([[0.2], [0.6], [0.95]], dtype=F64)
    t = torch.arange(3)
    two = lambda v: torch.cat([v, 1 - v], -1)
    assert torch.allclose(dirichlet.log_prob(two(x), two(p), t), beta.log_prob(x, p, t), rtol=1e-12)
    assert torch.allclose(dirichlet.kl(two(p), two(q), t), beta.kl(p, q, t), rtol=1e-10)
    assert torch.allclose(dirichlet.log_normalizer(two(p), t), beta.log_normalizer(p, t), rtol=1e-12)


def test_noise_map_is_scipy_stick_breaking():
    """from_noise = stick-breaking with v_k = F⁻¹_{Beta(α_k, Σ_{j>k} α_j)}(Φ(ξ_k)) (scipy's betaincinv,
    an independent oracle), and to_noise inverts it without auxiliary draws."""
    fam = fam_with(NUS)
    x0 = some_x0(25, seed=4)
    t = torch.arange(25) % len(NUS)
    xi = 2 * torch.randn((25, 2), generator=torch.Generator().manual_seed(5), dtype=F64)
    x = fam.from_noise(xi, x0, t).numpy()
    alpha = 1 + np.array(NUS)[t.numpy()][:, None] * x0.numpy()
    rest = alpha[:, ::-1].cumsum(1)[:, ::-1][:, 1:]
    v = sc.betaincinv(alpha[:, :2], rest, sc.ndtr(xi.numpy()))
    expected = np.stack([v[:, 0], (1 - v[:, 0]) * v[:, 1], (1 - v[:, 0]) * (1 - v[:, 1])], 1)
    assert np.allclose(x, expected, rtol=1e-8, atol=1e-300)
    assert fam.noise_shape == (2,) and not fam.inverse_uses_aux
    back = fam.to_noise(torch.from_numpy(x), x0, t)
    assert torch.allclose(back, xi, rtol=0, atol=1e-8)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_tiny_components_stay_finite(dtype):
    """ν = 1e4 with x0 on a vertex: components near 1e-4…1e-8, log x must stay finite."""
    fam = fam_with(NUS)
    x0 = torch.tensor([[1 - 2e-6, 1e-6, 1e-6], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], dtype=dtype)
    x0 = x0.repeat(len(NUS) * 300, 1)
    t = torch.arange(len(NUS)).repeat_interleave(900)
    g = torch.Generator().manual_seed(6)
    x = fam.sample(x0, t, g)
    fam.check_domain(x)
    assert x.dtype == dtype and (x > 0).all()
    xi = fam.to_noise(x, x0, t, g)
    back = fam.from_noise(xi, x0, t)
    for v in (xi, back, fam.stat(x, t), fam.log_prob(x, x0, t), fam.kl(x0, x0.flip(-1), t)):
        assert torch.isfinite(v).all()
    rel = ((back - x).abs() / x).max().item()
    assert rel < (1e-9 if dtype == F64 else 1e-5), rel


def test_several_simplices_per_example():
    fam = Dirichlet((2, 3), nu=torch.tensor([5.0, 0.5], dtype=F64))
    x0 = some_x0(8, seed=7).reshape(4, 2, 3)
    x0_hat = some_x0(8, seed=8).reshape(4, 2, 3)
    x = fam.sample(x0, 0, torch.Generator().manual_seed(9))
    single = Dirichlet((3,), nu=torch.tensor([5.0, 0.5], dtype=F64))
    split = lambda f, *v: f(*(u.reshape(8, 3) for u in v), 0).reshape(4, 2).sum(1)
    assert torch.allclose(fam.log_prob(x, x0, 0), split(lambda a, b, t: single.log_prob(a, b, t), x, x0))
    assert torch.allclose(fam.kl(x0, x0_hat, 0), split(lambda a, b, t: single.kl(a, b, t), x0, x0_hat))
    assert torch.allclose(fam.log_normalizer(x0, 0), single.log_normalizer(x0.reshape(8, 3), 0).reshape(4, 2).sum(1))


def test_kl_rescaled_divides_by_total_concentration():
    fam = fam_with(NUS)
    x0, x0_hat = some_x0(10, seed=10), some_x0(10, seed=11)
    t = torch.arange(10) % len(NUS)
    nu = torch.tensor(NUS, dtype=F64)[t]
    assert torch.allclose(fam.kl_rescaled(x0, x0_hat, t), fam.kl(x0, x0_hat, t) / (nu + 3), rtol=1e-14)


def test_prior_is_uniform_on_simplex():
    fam = fam_with([1.0, 0.01], k=4)
    p = fam.prior_sample(4000, torch.Generator().manual_seed(12), dtype=F64)
    fam.check_domain(p)
    # each coordinate of Dir(1, 1, 1, 1) is Beta(1, 3)
    assert stats.kstest(p[:, 0].numpy(), stats.beta(1, 3).cdf).pvalue > 1e-3
    assert stats.kstest(p[:, 3].numpy(), stats.beta(1, 3).cdf).pvalue > 1e-3


def test_check_domain():
    fam = fam_with([1.0])
    fam.check_domain(torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=F64))  # boundary data is fine
    for bad in ([[0.5, 0.6, -0.1]], [[0.5, 0.6, 0.1]], [[np.nan, 0.5, 0.5]], [[0.5, 0.5]]):
        with pytest.raises(DomainError, match="dirichlet"):
            fam.check_domain(torch.tensor(bad, dtype=F64))


def test_float32_map_is_the_float64_map_to_one_ulp(monkeypatch):
    """For float32 x0 each stick runs the float32-precision Beta map (issue #17); the point of the
    simplex is the float64 map's to one float32 ulp, at every ν of NUS and with nearly empty
    components."""
    from mstar_engine.numerics import beta_map as BM
    calls = []
    real = BM.beta_logit_icdf_normal_single
    monkeypatch.setattr(BM, "beta_logit_icdf_normal_single", lambda *a: calls.append(a[0].numel()) or real(*a))
    fam = fam_with(NUS)
    x0 = some_x0(600, seed=11)
    x0[:100] = torch.tensor([1 - 2e-6, 1e-6, 1e-6], dtype=F64)
    x0 = x0.float().repeat(len(NUS), 1)
    t = torch.arange(len(NUS)).repeat_interleave(600)
    xi = torch.randn((x0.shape[0], 2), generator=torch.Generator().manual_seed(12))
    x = fam.from_noise(xi, x0, t)
    ref = fam.from_noise(xi.double(), x0.double(), t).float()
    assert calls == [xi.numel()] and x.dtype == torch.float32
    ulp = torch.nextafter(ref, torch.full_like(ref, 2.0)) - ref
    assert bool(((x - ref).abs() <= ulp).all()), float(((x - ref).abs() / ulp).max())
