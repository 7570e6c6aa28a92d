"""The KL-SNR measure: each family's closed form against a brute-force pair average of the
family's KL written out in full (independent quadrature or sampling), and its paths."""
import numpy as np
import pytest
from scipy import special

from mstar_engine.families import REGISTRY
from mstar_engine.schedules.kl_snr import kl_snr


def pair_ratio(kl_matrix, w, g):
    """E[KL] / E[½ ‖g − g'‖²] over a product rule (weights w, Gaussian coordinates g: (n, D))."""
    ww = w[:, None] * w[None, :]
    d2 = np.sum((g[:, None, :] - g[None, :, :]) ** 2, axis=-1)
    return np.sum(ww * kl_matrix) / np.sum(ww * 0.5 * d2)


def beta_kl(a0, b0, a1, b1):
    return (special.betaln(a1, b1) - special.betaln(a0, b0) + (a0 - a1) * special.digamma(a0)
            + (b0 - b1) * special.digamma(b0) + (a1 - a0 + b1 - b0) * special.digamma(a0 + b0))


@pytest.mark.parametrize("nu", [0.3, 20.0, 3000.0])
def test_beta(nu):
    t, w = special.roots_jacobi(400, 0.5, 0.5)  # product Gauss rule, x0 ~ Beta(1.5, 1.5)
    x, w = (1 + t) / 2, w / w.sum()
    a, b = 1 + nu * x, 1 + nu * (1 - x)
    kl = beta_kl(a[:, None], b[:, None], a[None, :], b[None, :])
    expected = pair_ratio(kl, w, (2 * x - 1)[:, None])
    assert kl_snr("beta", {"nu": np.array([nu])})[0] == pytest.approx(expected, rel=1e-6)


def dirichlet_kl(a0, a1):
    s0, s1 = a0.sum(-1), a1.sum(-1)
    return (special.gammaln(s0) - special.gammaln(s1) - np.sum(special.gammaln(a0) - special.gammaln(a1), -1)
            + np.sum((a0 - a1) * (special.digamma(a0) - special.digamma(s0)[..., None]), -1))


@pytest.mark.parametrize("nu", [2.0, 200.0])
def test_dirichlet_over_sampled_simplex_pairs(nu):
    rng = np.random.default_rng(3)
    x, y = rng.dirichlet(np.ones(3), 40_000), rng.dirichlet(np.ones(3), 40_000)
    expected = np.mean(dirichlet_kl(1 + nu * x, 1 + nu * y)) / np.mean(0.5 * np.sum((x - y) ** 2, -1))
    assert kl_snr("dirichlet", {"nu": np.array([nu])}, (3,))[0] == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("kappa", [0.01, 1.0, 30.0, 1e7])
def test_vmf_on_s2_is_kappa_times_coth_form(kappa):
    a3 = 1 / np.tanh(kappa) - 1 / kappa if kappa > 0.1 else kappa / 3 - kappa ** 3 / 45
    assert kl_snr("vmf", {"kappa": np.array([kappa])}, (3,))[0] == pytest.approx(kappa * a3, rel=1e-9)


def test_von_mises_is_kappa_i1_over_i0():
    kappa = np.array([0.1, 2.0, 40.0])
    np.testing.assert_allclose(kl_snr("von-mises", {"kappa": kappa}), kappa * special.i1(kappa) / special.i0(kappa),
                               rtol=1e-12)


@pytest.mark.parametrize("bar_beta", [1e-6, 0.3, 0.99])
def test_categorical_over_all_class_pairs(bar_beta):
    k = 5
    rows = (1 - bar_beta) * np.eye(k) + bar_beta / k
    kl = np.sum(rows[:, None, :] * np.log(rows[:, None, :] / rows[None, :, :]), -1)
    expected = pair_ratio(kl, np.full(k, 1 / k), np.eye(k))
    assert kl_snr("categorical", {"bar_beta": np.array([bar_beta])}, (1, k))[0] == pytest.approx(expected, rel=1e-12)


def wishart_kl(n, m0, m1):
    """KL(W(n, M0⁻¹/n) ‖ W(n, M1⁻¹/n)) = ½ n [tr(M1 M0⁻¹) − log det(M1 M0⁻¹) − p] (notes eq. 141)."""
    r = m1 @ np.linalg.inv(m0)
    return 0.5 * n * (np.trace(r, axis1=-2, axis2=-1) - np.linalg.slogdet(r)[1] - m0.shape[-1])


def random_spd(rng, n, p):
    """X0 = Q diag(λ) Qᵀ, Q Haar (QR of a Gaussian with sign fix), log λ ~ N(0, 0.5²)."""
    q, r = np.linalg.qr(rng.standard_normal((n, p, p)))
    q = q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    lam = np.exp(0.5 * rng.standard_normal((n, p)))
    return q @ (lam[..., None] * q.transpose(0, 2, 1))


@pytest.mark.parametrize("p", [2, 3])
@pytest.mark.parametrize("df,xi", [(7.0, 0.3), (500.0, 0.95)])
def test_wishart_over_sampled_pairs(p, df, xi):
    rng = np.random.default_rng(5)
    x = random_spd(rng, 2 * 100_000, p).reshape(2, 100_000, p, p)
    m = xi * np.linalg.inv(x) + (1 - xi) * np.eye(p)
    kl = wishart_kl(df, m[0], m[1])
    expected = np.mean(kl) / np.mean(0.5 * np.sum((x[0] - x[1]) ** 2, axis=(-2, -1)))
    got = kl_snr("wishart", {"df": np.array([df]), "xi": np.array([xi])}, (p, p))[0]
    assert got == pytest.approx(expected, rel=0.015)


@pytest.mark.parametrize("shape,xi", [(2.0, 0.5), (1e4, 0.0), (50.0, 0.99)])
def test_gamma(shape, xi):
    u = np.arange(-25, 5, 0.07)  # product trapezoid in log x0, x0 ~ Gamma(4, rate 4)
    x = np.exp(u)
    w = np.exp(4 * u - 4 * x)
    w = w / w.sum()
    rate = shape * (xi + (1 - xi) / x)
    kl = shape * (np.log(rate[:, None] / rate[None, :]) + rate[None, :] / rate[:, None] - 1)
    expected = pair_ratio(kl, w, x[:, None])
    got = kl_snr("gamma", {"shape": np.array([shape]), "xi": np.array([xi])})[0]
    assert got == pytest.approx(expected, rel=1e-6)


def test_gaussian_is_the_snr():
    assert kl_snr("gaussian", {"mean": np.array([0.6]), "var": np.array([0.64])})[0] == pytest.approx(0.36 / 0.64)


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_paths_are_increasing_from_zero(family):
    cls = REGISTRY[family]
    lam = np.logspace(np.log10(cls.kl_snr_bounds[0]), np.log10(cls.kl_snr_bounds[1]), 97)
    s = kl_snr(family, cls.kl_snr_path(lam, cls.kl_snr_shape), cls.kl_snr_shape)
    assert np.all(np.isfinite(s)) and np.all(np.diff(s) > 0)
    assert s[0] < 1e-9


def test_unknown_family_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown family 'poisson'"):
        kl_snr("poisson", {"rate": np.ones(3)})
