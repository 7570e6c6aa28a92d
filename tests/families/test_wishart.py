"""Wishart family: density, Bartlett noise map, sampler, KL and head oracles (scipy.stats.wishart)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from mstar_engine.families.base import DomainError
from mstar_engine.families.wishart import Wishart
from mstar_engine.process.kernel import coupled_step
from tests.families.fixtures import out_of_domain, toy, toy_data

F64 = torch.float64


def scale_matrix(fam: Wishart, x0: torch.Tensor, t: int) -> np.ndarray:
    """V_t = M_t⁻¹/n_t with M_t = ξ_t X0⁻¹ + (1 − ξ_t) I, built directly in numpy."""
    xi, n = float(fam.xi[t]), float(fam.df[t])
    m = xi * np.linalg.inv(x0.numpy()) + (1 - xi) * np.eye(fam.p)
    return np.linalg.inv(m) / n


@pytest.mark.parametrize("p", [2, 3, 5])
def test_log_prob_matches_scipy(p):
    fam = toy(Wishart, p=p)
    g = torch.Generator().manual_seed(p)
    x0 = toy_data(fam, 1, g)
    x = toy_data(fam, 4, g)
    for t in (0, 3, 8):
        ref = stats.wishart(df=float(fam.df[t]), scale=scale_matrix(fam, x0[0], t)).logpdf(np.moveaxis(x.numpy(), 0, -1))
        np.testing.assert_allclose(fam.log_prob(x, x0.expand(4, p, p), t).numpy(), ref, rtol=1e-11)


@pytest.mark.parametrize("p", [2, 3, 5])
def test_bartlett_round_trip(p):
    """to_noise ∘ from_noise and from_noise ∘ to_noise are identities, noise tails included."""
    fam = toy(Wishart, p=p)
    g = torch.Generator().manual_seed(10 + p)
    n = 400
    x0 = toy_data(fam, n, g)
    t = torch.randint(0, fam.steps + 1, (n,), generator=g)
    xi = torch.randn(n, p * (p + 1) // 2, generator=g, dtype=F64)
    xi[:8] *= 4.0  # tails of the chi-square diagonal
    x = fam.from_noise(xi, x0, t)
    fam.check_domain(x)
    torch.testing.assert_close(fam.to_noise(x, x0, t), xi, rtol=1e-9, atol=1e-9)
    back = fam.from_noise(fam.to_noise(x, x0, t), x0, t)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [2, 3])
def test_samples_match_scipy_and_noise_is_normal(p):
    fam = toy(Wishart, p=p)
    g = torch.Generator().manual_seed(20 + p)
    n = 3000
    x0 = toy_data(fam, 1, g)
    for t in (1, 5, 8):
        x = fam.sample(x0.expand(n, p, p), t, g)
        ref = stats.wishart(df=float(fam.df[t]), scale=scale_matrix(fam, x0[0], t)).rvs(n, random_state=t)
        for stat in (lambda a: np.trace(a, axis1=-2, axis2=-1), lambda a: np.linalg.slogdet(a)[1], lambda a: a[:, -1, 0]):
            assert stats.ks_2samp(stat(x.numpy()), stat(ref)).pvalue > 1e-3
        xi = fam.to_noise(x, x0.expand(n, p, p), t)
        assert stats.kstest(xi.flatten().numpy(), "norm").pvalue > 1e-3


def test_mean_moves_from_x0_to_identity():
    fam = toy(Wishart, p=3)
    g = torch.Generator().manual_seed(30)
    x0 = toy_data(fam, 1, g)
    n = 4000
    x = fam.sample(x0.expand(n, 3, 3), 0, g)  # ξ_0 = 1: E X = X0
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - x0[0]).abs() < 5 * se + 1e-12).all()
    mean_t = torch.from_numpy(scale_matrix(fam, x0[0], 6) * float(fam.df[6]))
    x = fam.sample(x0.expand(n, 3, 3), 6, g)
    assert ((x.mean(0) - mean_t).abs() < 5 * x.std(0) / math.sqrt(n)).all()
    prior = fam.prior_sample(n, g, dtype=F64)
    assert ((prior.mean(0) - torch.eye(3, dtype=F64)).abs() < 5 * prior.std(0) / math.sqrt(n) + 1e-12).all()


def test_kernel_preserves_marginal():
    fam = toy(Wishart, p=2)
    g = torch.Generator().manual_seed(40)
    n = 3000
    x0 = toy_data(fam, 1, g).expand(n, 2, 2)
    t = 5
    x_t = fam.sample(x0, t, g)
    direct = fam.sample(x0, t - 1, g)
    for rho in (0.0, 0.5, 0.99, 1.0):
        y = coupled_step(fam, x_t, x0, t, rho, g)
        for a, b in ((y[:, 0, 0], direct[:, 0, 0]), (y[:, 1, 0], direct[:, 1, 0]), (torch.logdet(y), torch.logdet(direct))):
            assert stats.ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("p", [2, 4])
def test_kl_closed_form_and_monte_carlo(p):
    fam = toy(Wishart, p=p)
    g = torch.Generator().manual_seed(50 + p)
    x0, x0_hat = toy_data(fam, 1, g), toy_data(fam, 1, g)
    n = 8000
    for t in (2, 5, 8):
        nt = float(fam.df[t])
        v, v_hat = scale_matrix(fam, x0[0], t), scale_matrix(fam, x0_hat[0], t)
        r = np.linalg.solve(v_hat, v)
        ref = 0.5 * nt * (np.trace(r) - np.linalg.slogdet(r)[1] - p)
        assert float(fam.kl(x0, x0_hat, t)) == pytest.approx(ref, rel=1e-10)
        assert float(fam.kl_rescaled(x0, x0_hat, t)) == pytest.approx(ref / nt, rel=1e-10)
        x = fam.sample(x0.expand(n, p, p), t, g)
        diff = fam.log_prob(x, x0.expand(n, p, p), t) - fam.log_prob(x, x0_hat.expand(n, p, p), t)
        assert abs(float(diff.mean()) - ref) < 4 * float(diff.std()) / math.sqrt(n)
    assert float(fam.kl(x0, x0, 4)) == pytest.approx(0.0, abs=1e-10)


def test_exponential_family_identity():
    fam = toy(Wishart, p=3)
    g = torch.Generator().manual_seed(60)
    x0, x0b, x = toy_data(fam, 4, g), toy_data(fam, 4, g), toy_data(fam, 4, g)
    for t in range(fam.steps + 1):
        rest_a = fam.log_prob(x, x0, t) - ((fam.features(x0) * fam.stat(x, t)).sum((1, 2)) - fam.log_normalizer(x0, t))
        rest_b = fam.log_prob(x, x0b, t) - ((fam.features(x0b) * fam.stat(x, t)).sum((1, 2)) - fam.log_normalizer(x0b, t))
        torch.testing.assert_close(rest_a, rest_b, rtol=0, atol=1e-9)


def test_far_tail_state_gives_finite_noise():
    fam = toy(Wishart, p=2)
    x0 = torch.eye(2, dtype=F64)[None]
    x = torch.tensor([[[1e-3, 0.0], [0.0, 50.0]]], dtype=F64)  # far from q_0(· | I) (n_0 = 500)
    xi = fam.to_noise(x, x0, 0)
    assert torch.isfinite(xi).all() and (xi.abs() <= 37.5).all()


def test_head_prior_domain_and_schedule_checks():
    fam = toy(Wishart, p=3, dtype=torch.float32)
    raw = torch.tensor([[50.0] * 6, [-50.0] * 6, [0.0] * 6, [-50.0, 50.0, -50.0, 50.0, -50.0, 50.0]],
                       requires_grad=True)
    out = fam.head(raw)
    fam.check_domain(out.detach(), "head output")
    out.sum().backward()
    assert torch.isfinite(raw.grad).all()
    fam.check_domain(fam.prior_sample(16, torch.Generator().manual_seed(0)))
    with pytest.raises(DomainError, match="positive definite|not symmetric"):
        fam.check_domain(out_of_domain(fam)[:1])
    with pytest.raises(DomainError, match="not symmetric"):
        fam.check_domain(out_of_domain(fam)[1:])
    with pytest.raises(ValueError, match="p − 1 = 2"):
        Wishart((3, 3), df=torch.tensor([10.0, 2.0], dtype=F64), xi=torch.tensor([1.0, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="xi"):
        Wishart((2, 2), df=torch.tensor([10.0, 5.0], dtype=F64), xi=torch.tensor([1.2, 0.5], dtype=F64))


def test_a_non_positive_definite_x0_gives_nan_in_its_own_example_only():
    """The landing solver's trial points can leave the cone numerically (28 × 28 connectomes);
    the maps then give NaN for that example, which the solver rejects, instead of failing the
    whole batch with a Cholesky error."""
    fam = toy(Wishart, p=3)
    g = torch.Generator().manual_seed(5)
    x0 = toy_data(fam, 3, g)
    x0[1] = torch.diag(torch.tensor([1.0, -0.5, 2.0], dtype=x0.dtype))  # indefinite
    xi = torch.randn(3, 6, generator=g, dtype=F64)
    x = fam.from_noise(xi, x0, 4)
    assert torch.isfinite(x[[0, 2]]).all() and torch.isnan(x[1]).all()
    good = toy_data(fam, 3, g)
    back = fam.to_noise(fam.from_noise(xi, good, 4), x0, 4)
    assert torch.isfinite(back[[0, 2]]).all() and torch.isnan(back[1]).all()
