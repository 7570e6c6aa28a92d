"""The direct samplers of the star-shaped draws (issue #17): ``sample`` of the Gamma, Wishart and
von Mises families, and :mod:`mstar_engine.numerics.direct_samplers`.

Each draws the law of ``from_noise`` of standard normal noise without the noise map's inverse CDF.
Checked here: the law against scipy.stats (one-sample KS) over several (t, x0), the extreme schedule
values included; against ``from_noise(randn)`` (two-sample KS); that the draws are a pure function of
the generator (same seed, same draws; the global RNG untouched). Every KS test is at significance
1e-3 with a fixed seed, so the suite is deterministic. Nothing here depends on timing.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from mstar_engine.families.gamma import Gamma
from mstar_engine.families.von_mises import VonMises, wrap_angle
from mstar_engine.families.wishart import Wishart
from mstar_engine.numerics.direct_samplers import log_standard_gamma, von_mises_offset
from mstar_engine.numerics.special import gamma_log_cdf
from mstar_engine.process.forward import rollout

F64 = torch.float64
ALPHA = 1e-3  # significance of every KS test

# Gamma: the gamma-exp schedule spans shapes 1..1e4; smaller shapes take the boosted (log-space) path
GAMMA_SHAPES = [0.02, 0.3, 1.0, 7.5, 1e3, 1e4, 3e4]
GAMMA_XIS = [0.0, 0.5, 0.9, 1.0, 0.2, 0.99, 0.7]
GAMMA_X0S = [1e-3, 0.4, 1.0, 30.0]
# von Mises: von-mises-exp spans κ 0.001..1100; κ < 1e-5 takes the Taylor envelope
KAPPAS = [1e-7, 1e-3, 0.05, 1.0, 8.0, 60.0, 1100.0, 1e5]
# Wishart: df near p − 1 (Bartlett shapes below 1; closer, draws are singular to rounding), wishart-exp's 5..2e4
WISHART_DF = {2: [1.6, 5.0, 60.0, 2e4], 3: [2.6, 5.0, 300.0, 2e4]}
WISHART_XI = [0.0, 0.3, 0.95, 1.0]


def ks(sample: np.ndarray, cdf) -> float:
    return stats.kstest(sample, cdf).pvalue


def gamma_family(dtype=F64) -> Gamma:
    return Gamma((1,), shape=torch.tensor(GAMMA_SHAPES, dtype=dtype), xi=torch.tensor(GAMMA_XIS, dtype=dtype))


def wishart_family(p: int) -> Wishart:
    return Wishart((p, p), df=torch.tensor(WISHART_DF[p], dtype=F64), xi=torch.tensor(WISHART_XI, dtype=F64))


def von_mises_family(d: int = 1) -> VonMises:
    return VonMises((d,), kappa=torch.tensor(KAPPAS, dtype=F64))


def spd(p: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn((p, p), generator=g, dtype=F64)
    return a @ a.T / p + 0.3 * torch.eye(p, dtype=F64)


# ----------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("alpha", [1e-3, 0.05, 0.7, 1.0, 3.5, 1e4])
def test_log_standard_gamma_law(alpha):
    """log G against the exact CDF P(α, e^y), evaluated in log space (tiny shapes: log G ≈ −1000,
    far below the float range of G itself)."""
    g = torch.Generator().manual_seed(1)
    y = log_standard_gamma(torch.full((20000,), alpha, dtype=F64), g)
    assert torch.isfinite(y).all()
    cdf = lambda v: torch.exp(gamma_log_cdf(torch.as_tensor(v, dtype=F64), torch.tensor(alpha, dtype=F64))[0]).numpy()
    assert ks(y.numpy(), cdf) > ALPHA


@pytest.mark.parametrize("kappa", KAPPAS)
def test_von_mises_offset_law(kappa):
    g = torch.Generator().manual_seed(2)
    theta = von_mises_offset(torch.tensor([kappa], dtype=F64), 20000, g)[0]
    assert (theta.abs() <= math.pi).all()
    assert ks(theta.numpy(), stats.vonmises(kappa).cdf) > ALPHA


def test_von_mises_offset_keeps_relative_precision_at_large_kappa():
    """θ ~ κ^{-1/2}: no arccos of a number next to 1, so the spread is right even at κ = 1e12."""
    g = torch.Generator().manual_seed(3)
    theta = von_mises_offset(torch.tensor([1e12], dtype=F64), 20000, g)[0] * 1e6  # ~ N(0, 1)
    assert ks(theta.numpy(), "norm") > ALPHA


# ----------------------------------------------------------------------------- Gamma
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_gamma_sample_matches_scipy(dtype):
    fam = gamma_family(dtype)
    g = torch.Generator().manual_seed(4)
    n = 4000
    for t, (a, xi) in enumerate(zip(GAMMA_SHAPES, GAMMA_XIS)):
        for x0v in GAMMA_X0S:
            x = fam.sample(torch.full((n, 1), x0v, dtype=dtype), t, g)
            assert x.dtype == dtype and (x > 0).all() and torch.isfinite(x).all()
            rate = a * (xi + (1 - xi) / x0v)
            ok = a >= 0.3 or dtype == F64  # float32: draws of shape 0.02 underflow and are clamped
            if ok:
                assert ks(x[:, 0].double().numpy(), stats.gamma(a, scale=1 / rate).cdf) > ALPHA, (t, x0v)


def test_gamma_sample_law_equals_noise_map():
    """Per-example steps t and x0 in one batch: sample() against from_noise(randn) (two-sample KS)."""
    fam = gamma_family()
    g = torch.Generator().manual_seed(5)
    n = 3000
    for t in range(fam.steps + 1):
        x0 = torch.tensor(GAMMA_X0S, dtype=F64).repeat(n)[:, None]
        steps = torch.full((x0.shape[0],), t)
        direct = fam.sample(x0, steps, g)
        mapped = fam.from_noise(torch.randn(x0.shape, generator=g, dtype=F64), x0, steps)
        for j in range(len(GAMMA_X0S)):
            assert stats.ks_2samp(direct[j::len(GAMMA_X0S), 0].numpy(),
                                  mapped[j::len(GAMMA_X0S), 0].numpy()).pvalue > ALPHA, (t, j)


# ----------------------------------------------------------------------------- Wishart
def scale_matrix(fam: Wishart, x0: torch.Tensor, t: int) -> np.ndarray:
    """V_t = M_t⁻¹/n_t with M_t = ξ_t X0⁻¹ + (1 − ξ_t) I, built directly in numpy."""
    xi, n = float(fam.xi[t]), float(fam.df[t])
    m = xi * np.linalg.inv(x0.numpy()) + (1 - xi) * np.eye(fam.p)
    return np.linalg.inv(m) / n


@pytest.mark.parametrize("p", [2, 3])
def test_wishart_sample_matches_scipy(p):
    """The Bartlett structure (the family's exact inverse gives i.i.d. N(0, 1) in every packed
    coordinate), the diagonal of L⁻¹ X L⁻ᵀ against χ²_n, the mean n V, and two-sample KS of the
    entries and log det against scipy.stats.wishart's own draws."""
    fam = wishart_family(p)
    g = torch.Generator().manual_seed(6 + p)
    n = 4000
    for t, df in enumerate(WISHART_DF[p]):
        x0 = spd(p, g)
        x = fam.sample(x0.expand(n, p, p), t, g)
        fam.check_domain(x)
        xi = fam.to_noise(x, x0.expand(n, p, p), t)
        for k in range(xi.shape[1]):
            assert ks(xi[:, k].numpy(), "norm") > ALPHA, (t, k)
        v = scale_matrix(fam, x0, t)
        chol = np.linalg.cholesky(v)
        white = np.linalg.solve(chol, np.linalg.solve(chol, x.numpy()).transpose(0, 2, 1))  # L⁻¹ X L⁻ᵀ
        for i in range(p):
            assert ks(white[:, i, i], stats.chi2(df).cdf) > ALPHA, (t, i)
        mean, sd = x.numpy().mean(0), x.numpy().std(0)
        assert (np.abs(mean - df * v) < 5 * sd / math.sqrt(n)).all()
        ref = stats.wishart(df=df, scale=v).rvs(size=n, random_state=np.random.default_rng(t))
        for a, b in ((0, 0), (p - 1, p - 1), (1, 0)):
            assert stats.ks_2samp(x[:, a, b].numpy(), ref[:, a, b]).pvalue > ALPHA, (t, a, b)
        assert stats.ks_2samp(np.linalg.slogdet(x.numpy())[1], np.linalg.slogdet(ref)[1]).pvalue > ALPHA


def test_wishart_sample_law_equals_noise_map():
    fam = wishart_family(2)
    g = torch.Generator().manual_seed(9)
    n = 3000
    x0 = spd(2, g).expand(n, 2, 2)
    for t in range(fam.steps + 1):
        direct = fam.sample(x0, t, g)
        mapped = fam.from_noise(torch.randn((n, 3), generator=g, dtype=F64), x0, t)
        for a, b in ((0, 0), (1, 1), (1, 0)):
            assert stats.ks_2samp(direct[:, a, b].numpy(), mapped[:, a, b].numpy()).pvalue > ALPHA, (t, a, b)


# ----------------------------------------------------------------------------- von Mises
def test_von_mises_sample_matches_scipy_and_its_cdf():
    """Offsets against scipy.stats.vonmises, and the family's own CDF (to_noise, accurate to 1e-8):
    exactly N(0, 1) for draws of q_t(· | x0)."""
    fam = von_mises_family(3)
    g = torch.Generator().manual_seed(10)
    n = 3000
    x0 = torch.tensor([-3.1, 0.0, 2.5], dtype=F64).expand(n, 3)
    for t, k in enumerate(KAPPAS):
        x = fam.sample(x0, t, g)
        fam.check_domain(x)
        assert ks(wrap_angle(x - x0).flatten().numpy(), stats.vonmises(k).cdf) > ALPHA, t
        assert ks(fam.to_noise(x, x0, t).flatten().numpy(), "norm") > ALPHA, t


def test_von_mises_sample_law_equals_noise_map():
    fam = von_mises_family(2)
    g = torch.Generator().manual_seed(11)
    n = 4000
    x0 = torch.tensor([3.0, -0.5], dtype=F64).expand(n, 2)
    for t in range(fam.steps + 1):
        direct = wrap_angle(fam.sample(x0, t, g) - x0)
        mapped = wrap_angle(fam.from_noise(torch.randn((n, 2), generator=g, dtype=F64), x0, t) - x0)
        assert stats.ks_2samp(direct.flatten().numpy(), mapped.flatten().numpy()).pvalue > ALPHA, t


def test_von_mises_sample_float32():
    fam = von_mises_family(1)
    g = torch.Generator().manual_seed(12)
    x0 = torch.full((5000, 1), 3.14, dtype=torch.float32)
    for t in (0, 4, 7):
        x = fam.sample(x0, t, g)
        assert x.dtype == torch.float32
        fam.check_domain(x)


# ----------------------------------------------------------------------------- determinism
def _cases():
    g = torch.Generator().manual_seed(13)
    return [
        (gamma_family(), torch.rand((64, 1), generator=g, dtype=F64) + 0.1),
        (wishart_family(2), spd(2, g).expand(64, 2, 2)),
        (von_mises_family(5), 2 * math.pi * torch.rand((64, 5), generator=g, dtype=F64) - math.pi),
    ]


@pytest.mark.parametrize("case", range(3))
def test_draws_are_a_pure_function_of_the_generator(case):
    fam, x0 = _cases()[case]
    t = torch.arange(x0.shape[0]) % (fam.steps + 1)
    torch.manual_seed(0)
    global_state = torch.get_rng_state()
    a = fam.sample(x0, t, torch.Generator().manual_seed(7))
    b = fam.sample(x0, t, torch.Generator().manual_seed(7))
    c = fam.sample(x0, t, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is not used
    keep = torch.randint(1, fam.steps + 1, (x0.shape[0], 2), generator=torch.Generator().manual_seed(1))
    r1 = rollout(fam, x0, keep, generator=torch.Generator().manual_seed(3))
    r2 = rollout(fam, x0, keep, generator=torch.Generator().manual_seed(3))
    assert torch.equal(r1.x, r2.x) and torch.equal(r1.s, r2.s)
