"""Categorical family: inverse-CDF noise map, KL, tail statistic and sufficiency oracles."""
from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch
from scipy import special, stats

from mstar_engine.families.base import DomainError
from mstar_engine.families.categorical import Categorical
from mstar_engine.process.kernel import coupled_step
from tests.families.fixtures import out_of_domain, toy, toy_data

F64 = torch.float64


def probs(fam: Categorical, x0: torch.Tensor, t: int) -> np.ndarray:
    bb = float(fam.bar_beta[t])
    return (1 - bb) * x0.numpy() + bb / fam.classes


def test_from_noise_is_the_inverse_cdf():
    """ξ just below / above Φ⁻¹ of every class boundary lands in the class below / above it."""
    fam = Categorical((1, 5), bar_beta=torch.tensor([1e-9, 0.3, 0.97], dtype=F64))
    x0 = torch.nn.functional.one_hot(torch.tensor([[2]]), 5).to(F64)
    for t in range(3):
        cum = np.cumsum(probs(fam, x0, t)[0, 0])[:-1]
        upper = np.cumsum(probs(fam, x0, t)[0, 0][::-1])[::-1][1:]  # 1 − cum, without cancellation
        z = np.where(cum < 0.5, stats.norm.ppf(cum), -stats.norm.ppf(upper))
        for k, zk in enumerate(z):
            step = 1e-9 * max(1.0, abs(zk))
            lo = fam.from_noise(torch.tensor([[zk - step]], dtype=F64), x0, t).argmax(-1)
            hi = fam.from_noise(torch.tensor([[zk + step]], dtype=F64), x0, t).argmax(-1)
            assert int(lo) == k and int(hi) == k + 1, (t, k, zk)


@pytest.mark.parametrize("bar_beta", [1e-12, 1e-3, 0.5, 0.999])
def test_sampling_round_trip_and_normal_noise(bar_beta):
    """Tiny intervals (β̄/K = 2.5e-13) keep full precision: exact round trip, N(0, 1) noise."""
    fam = Categorical((4, 4), bar_beta=torch.tensor([bar_beta, bar_beta], dtype=F64))
    g = torch.Generator().manual_seed(0)
    n = 5000
    x0 = toy_data(fam, n, g)
    x = fam.sample(x0, 1, g)
    fam.check_domain(x)
    # class offsets (x − x0) mod K: the true class with 1 − β̄ + β̄/K, each other one with β̄/K
    offsets = (x.argmax(-1) - x0.argmax(-1)) % 4
    counts = torch.bincount(offsets.flatten(), minlength=4).numpy()
    expected = x.shape[0] * 4 * np.array([1 - bar_beta + bar_beta / 4] + [bar_beta / 4] * 3)
    if expected[1] < 5:
        assert counts[1:].sum() <= 1
    else:
        assert stats.chisquare(counts, expected).pvalue > 1e-3
    xi = fam.to_noise(x, x0, 1, g)
    assert torch.isfinite(xi).all()
    assert stats.kstest(xi.flatten().numpy(), "norm").pvalue > 1e-3
    assert torch.equal(fam.from_noise(xi, x0, 1), x)


def test_kernel_preserves_marginal():
    fam = toy(Categorical)
    g = torch.Generator().manual_seed(1)
    n = 6000
    x0 = toy_data(fam, 1, g).expand(n, 3, 4)
    for t in (2, 6):
        x_t = fam.sample(x0, t, g)
        p = probs(fam, x0[:1], t - 1)[0]
        for rho in (0.0, 0.5, 0.99, 1.0):
            counts = coupled_step(fam, x_t, x0, t, rho, g).sum(0).numpy()
            chi2 = ((counts - n * p) ** 2 / (n * p)).sum()
            assert stats.chi2(3 * 3).sf(chi2) > 1e-3


def test_kl_is_exact_for_probability_vectors():
    fam = toy(Categorical)
    g = torch.Generator().manual_seed(2)
    x0 = toy_data(fam, 5, g)
    x0_hat = fam.head(3 * torch.randn(5, 3, 4, generator=g, dtype=F64))
    for t in range(fam.steps + 1):
        p, p_hat = probs(fam, x0, t), probs(fam, x0_hat, t)
        ref = special.rel_entr(p, p_hat).sum((1, 2))
        np.testing.assert_allclose(fam.kl(x0, x0_hat, t).numpy(), ref, rtol=1e-10)
        # and it is E_{x ~ q(x0)}[log q(x | x0) − log q(x | x̂0)], summed exactly over the classes
        expect = torch.zeros(5, dtype=F64)
        for pos in range(3):
            for k in range(4):
                xk = torch.nn.functional.one_hot(torch.full((5, 1), k), 4).to(F64)
                lq = fam.log_prob(xk, x0[:, pos:pos + 1], t)
                expect += lq.exp() * (lq - fam.log_prob(xk, x0_hat[:, pos:pos + 1], t))
        torch.testing.assert_close(fam.kl(x0, x0_hat, t), expect, rtol=1e-10, atol=1e-14)
    assert float(fam.kl(x0, x0, 3).abs().max()) == 0.0


def test_kl_near_uniform_keeps_relative_precision():
    """β̄ = 1 − 1e-9: KL ~ 1e-18 per position, checked against 50-digit decimal arithmetic."""
    getcontext().prec = 50
    bb = Decimal(1) - Decimal("1e-9")
    fam = Categorical((1, 3), bar_beta=torch.tensor([float(bb)], dtype=F64))
    x0 = torch.tensor([[[1.0, 0.0, 0.0]]], dtype=F64)
    x0_hat = torch.tensor([[[0.25, 0.5, 0.25]]], dtype=F64)
    bb_f = Decimal(float(bb))  # the float the family actually holds
    p = [(1 - bb_f) * Decimal(v) + bb_f / 3 for v in (1, 0, 0)]
    q = [(1 - bb_f) * Decimal(v) + bb_f / 3 for v in ("0.25", "0.5", "0.25")]
    ref = float(sum(pi * (pi / qi).ln() for pi, qi in zip(p, q)))
    assert float(fam.kl(x0, x0_hat, 0)) == pytest.approx(ref, rel=1e-6)


def test_identity_pseudo_step_gives_cross_entropy_and_finite_stat():
    fam = Categorical((2, 3), bar_beta=torch.tensor([0.0, 0.5], dtype=F64))
    x0 = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]], dtype=F64)
    x0_hat = torch.tensor([[[0.2, 0.7, 0.1], [0.6, 0.4, 0.0]]], dtype=F64, requires_grad=True)
    kl = fam.kl(x0, x0_hat, 0)
    assert float(kl.detach()) == pytest.approx(-math.log(0.7) - math.log(0.6), rel=1e-12)
    kl.sum().backward()
    assert torch.isfinite(x0_hat.grad).all()
    assert torch.isfinite(fam.stat(x0, 0)).all()
    assert torch.equal(fam.sample(x0, 0), x0)


def test_softmax_of_tail_statistic_is_the_brute_force_posterior():
    """softmax(s_t) = q(x0 | x_{t:T}) under a uniform prior (SS-DDPM eq. 116), by enumeration."""
    fam = toy(Categorical)
    g = torch.Generator().manual_seed(3)
    x0 = toy_data(fam, 2, g)
    t0 = 3
    xs = {t: fam.sample(x0, t, g) for t in range(t0, fam.steps + 1)}
    s = sum(fam.stat(xs[t], t) for t in xs)
    cand = torch.eye(4, dtype=F64)
    for pos in range(3):
        log_post = torch.stack([
            sum(fam.log_prob(xs[t][:, pos:pos + 1], cand[k].expand(2, 1, 4), t) for t in xs) for k in range(4)], -1)
        torch.testing.assert_close(torch.softmax(s[:, pos], -1), torch.softmax(log_post, -1), rtol=1e-10, atol=1e-12)


def test_exponential_family_identity():
    fam = toy(Categorical)
    g = torch.Generator().manual_seed(4)
    x0, x = toy_data(fam, 6, g), toy_data(fam, 6, g)
    for t in range(fam.steps + 1):
        lhs = fam.log_prob(x, x0, t)
        rhs = (fam.features(x0) * fam.stat(x, t)).sum((1, 2)) - fam.log_normalizer(x0, t)
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_head_prior_domain():
    fam = toy(Categorical, dtype=torch.float32)
    raw = torch.tensor([[[50.0, -50.0, 0.0, 0.0]] * 3, [[-50.0] * 4] * 3])
    out = fam.head(raw)
    fam.check_domain(out, "head output")
    fam.check_domain(fam.prior_sample(8, torch.Generator().manual_seed(0)))
    with pytest.raises(DomainError, match="sum to 1|lie in"):
        fam.check_domain(out_of_domain(fam)[:1])
    with pytest.raises(DomainError, match="lie in"):
        fam.check_domain(out_of_domain(fam)[1:])
    with pytest.raises(DomainError, match="trailing shape"):
        fam.check_domain(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="bar_beta"):
        Categorical((2, 3), bar_beta=torch.tensor([0.1, 1.5], dtype=F64))
