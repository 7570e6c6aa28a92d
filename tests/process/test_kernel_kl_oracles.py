"""Independent oracles for the Monte Carlo kernel KL of every continuous family (issue #14).

``kernel_kl`` returns a one-draw estimate of KL( k_t(· | x_t, x0) ‖ k_t(· | x_t, x̂0) ) with the
Gaussian-copula kernel density of MATH.md §2,

    k(y | x_t, x0) = q_{t-1}(y | x0) · N(ξ_y; ρ ξ_t, 1 − ρ²) / N(ξ_y; 0, 1),
    ξ_t = to_noise(x_t, x0, t),   ξ_y = to_noise(y, x0, t − 1).

For each family a few fixed examples (x_t, x0, x̂0, t) and ρ ∈ RHOS form cells; every cell is
repeated R times, and the mean of ``kernel_kl`` with its standard error is compared with a value
that does not use the family's methods: the marginal parameters come from the family's schedule
arrays and its documented parameterisation, densities and CDFs from scipy, and the noise maps are
rewritten here in numpy from the module docstrings.

* Coordinatewise families (gaussian, gamma, von-mises, beta): deterministic quadrature over the
  fresh noise, KL = Σ_i E_{e ~ N(0,1)}[log k0(y(z)) − log k1(y(z))], z = ρ ξ_t + sqrt(1 − ρ²) e,
  y(z) = F⁻¹_{x0,t−1}(Φ(z)) — Gauss–Hermite nodes; for the circle, where log k1 has a logarithmic
  singularity at the antipode of x̂0 (ξ̂_y jumps from +∞ to −∞ there), tanh–sinh quadrature on the
  two sides of it. |mean − oracle| must stay within 3 standard errors.  Gaussian: the quadrature
  also equals the closed form ``coupled_kl`` (to 1e-12). The quadrature is checked at ρ = 0, where it
  must equal the family's closed-form marginal KL (1e-9), and the family's noise maps and log density
  must agree with the scipy marginals on the quadrature's points. The von Mises CDF is integrated
  here (:class:`VonMisesTail`): scipy's is off by up to 1e-3 relative in the tails above κ ≈ 50.
* Multivariate families (wishart, dirichlet, vmf): an independent Monte Carlo estimate with scipy
  densities and numpy noise maps; the two means must agree within 3 combined standard errors, and
  on the oracle's own draws the family's noise maps and log densities must agree with the oracle's
  pointwise (same ξ → same y, same y → same ξ̂ and log q).

Families whose inverse noise map still draws auxiliary variables (``inverse_uses_aux``) have no
kernel density: their test is skipped until the bijective map lands.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy import special, stats

from mstar_engine.families import get
from mstar_engine.process.kernel_kl import kernel_kl
from tests.families.fixtures import toy, toy_data

F64 = torch.float64
RHOS = (0.3, 0.7, 0.95)
R = 4000          # repeats per (example, ρ) cell
Z_SE = 3.0        # tolerance in standard errors

_GH_E, _GH_W = hermegauss(80)
_KEEP = np.abs(_GH_E) <= 10.0          # the dropped nodes carry < 1e-22 of the mass
_GH_E, _GH_W = _GH_E[_KEEP], _GH_W[_KEEP] / math.sqrt(2 * math.pi)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many small batched ops (3×3 Cholesky, elementwise maps over ~50k rows): one intra-op thread is
    as fast and does not thrash when the test processes share few cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _require_bijection(name: str):
    cls = get(name)
    if cls.inverse_uses_aux:
        pytest.skip(f"the {name} noise map still draws auxiliary variables (kernel_kl refuses it)")


# --------------------------------------------------------------------------------------------
# The engine side: kernel_kl averaged over R repeats of every cell
# --------------------------------------------------------------------------------------------
def engine_means(fam, x_t, x0, x0_hat, t, seed):
    """Mean and standard error of kernel_kl per (example, ρ) cell, arrays of shape (E, len(RHOS))."""
    n_ex, n_rho = x0.shape[0], len(RHOS)
    idx = torch.arange(n_ex).repeat_interleave(n_rho * R)
    rho = torch.tensor(RHOS, dtype=F64).repeat_interleave(R).repeat(n_ex)
    g = torch.Generator().manual_seed(seed)
    kl = kernel_kl(fam, x_t[idx], x0[idx], x0_hat[idx], t[idx], rho, generator=g, monte_carlo=True)
    assert kl.dtype == F64 and bool(torch.isfinite(kl).all())
    kl = kl.reshape(n_ex, n_rho, R).numpy()
    return kl.mean(-1), kl.std(-1, ddof=1) / math.sqrt(R)


def report(name, mean, se, oracle, oracle_se=None):
    """|difference| in standard errors per cell; printed (pytest -s) and returned."""
    total_se = se if oracle_se is None else np.sqrt(se ** 2 + oracle_se ** 2)
    z = np.abs(mean - oracle) / total_se
    for e in range(mean.shape[0]):
        cells = ", ".join(f"ρ={r}: {m:.5g} vs {o:.5g} (se {s:.2g}, {zz:.2f}σ)"
                          for r, m, o, s, zz in zip(RHOS, mean[e], oracle[e], total_se[e], z[e]))
        print(f"{name} example {e}: {cells}")
    print(f"{name}: max |difference|/se = {z.max():.2f} over {z.size} cells")
    return z


def _log_ratio(z, mean, rho):
    """log N(z; mean, 1 − ρ²) − log N(z; 0, 1), elementwise."""
    var = 1.0 - rho * rho
    return -0.5 * (z - mean) ** 2 / var - 0.5 * np.log(var) + 0.5 * z * z


# --------------------------------------------------------------------------------------------
# Coordinatewise families: scipy marginals and noise-space quadrature
# --------------------------------------------------------------------------------------------
class Scalar:
    """One coordinate's marginal (a frozen scipy distribution) with its noise map
    ξ = Φ⁻¹(F(x)), x = F⁻¹(Φ(ξ)), each tail through its own side (cdf/ppf below, sf/isf above)."""

    def __init__(self, dist):
        self.d = dist

    def logpdf(self, x):
        return self.d.logpdf(x)

    def to_noise(self, x):
        x = np.asarray(x, dtype=np.float64)
        lower = self.d.cdf(x) <= 0.5
        with np.errstate(divide="ignore"):
            return np.where(lower, special.ndtri_exp(self.d.logcdf(x)), -special.ndtri_exp(self.d.logsf(x)))

    def from_noise(self, z):
        z = np.asarray(z, dtype=np.float64)
        return np.where(z <= 0, self.d.ppf(special.ndtr(z)), self.d.isf(special.ndtr(-z)))


class BetaScalar:
    """Beta(a, b) with its noise map; a point is carried as the pair (v, 1 − v) (from_noise returns
    shape (2, n)) so that draws near 1 keep their precision; see :class:`_Fraction`."""

    def __init__(self, a, b):
        self.a, self.b, self.frac = a, b, _Fraction(a, b)

    @staticmethod
    def _pair(y):
        y = np.asarray(y, dtype=np.float64)
        return np.stack([y, 1 - y]) if y.ndim == 0 else y

    def from_noise(self, z):
        return np.stack(self.frac.from_noise(np.asarray(z, dtype=np.float64)))

    def to_noise(self, y):
        v, w = self._pair(y)
        return self.frac.to_noise(v, w)

    def logpdf(self, y):
        """Beta(a, b) density at v, read as the Beta(b, a) density at 1 − v above ½."""
        v, w = self._pair(y)
        return np.where(v <= 0.5, stats.beta.logpdf(v, self.a, self.b), stats.beta.logpdf(w, self.b, self.a))


def _wrap(x):
    """Angles into [−π, π)."""
    return np.remainder(np.asarray(x) + math.pi, 2 * math.pi) - math.pi


_GL_X, _GL_W = np.polynomial.legendre.leggauss(8)


class VonMisesTail:
    """T(a) = ∫_a^π exp(κ (cos θ − 1)) dθ for a ∈ [0, π], so that the von Mises CDF is
    F(−a) = T(a) / (2 T(0)): 8-point Gauss–Legendre on each of 4096 cells of [0, π] (cell width
    below 1/40 of the bump width 1/√κ for κ ≤ 2000), summed from π down, so the tail keeps its
    relative precision (it agrees with scipy.integrate.quad to 1e-13). scipy's vonmises.cdf switches
    to a normal approximation above κ ≈ 50 and is off by up to 1e-3 relative in the tails there;
    below κ = 30 it agrees with this table to 1e-8 where F > 1e-4 (checked at construction)."""

    cells = 4096

    def __init__(self, kappa):
        self.kappa = float(kappa)
        self.edges = np.linspace(0.0, math.pi, self.cells + 1)
        per_cell = self._integral(self.edges[:-1], self.edges[1:])
        self.above = np.concatenate([np.cumsum(per_cell[::-1])[::-1], [0.0]])   # T(edge_j)
        if self.kappa < 30:
            a = np.linspace(0.0, math.pi, 64)
            mine, ref = self.lower_cdf(a), stats.vonmises.cdf(-a, self.kappa)
            bulk = ref > 1e-4
            np.testing.assert_allclose(mine[bulk], ref[bulk], rtol=1e-8)

    def _integral(self, lo, hi):
        half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
        theta = mid[..., None] + half[..., None] * _GL_X
        return half * (np.exp(self.kappa * (np.cos(theta) - 1)) @ _GL_W)

    def lower_cdf(self, a):
        """F(−a) = P(φ ≤ −a), a ∈ [0, π]."""
        a = np.clip(np.asarray(a, dtype=np.float64), 0.0, math.pi)
        j = np.minimum((a / math.pi * self.cells).astype(int), self.cells - 1)
        return (self.above[j + 1] + self._integral(a, self.edges[j + 1])) / (2 * self.above[0])


class Circular:
    """VM(loc, κ) on [−π, π) with the noise map of von_mises.py: the offset φ = wrap(x − loc) has
    F(φ) = Φ(ξ), F the von Mises CDF on [−π, π), read through its lower half by symmetry
    (F(φ) = 1 − F(−φ)); the inverse by bisection. Density: scipy's vonmises.logpdf."""

    tails: dict[float, VonMisesTail] = {}   # one table per κ

    def __init__(self, loc, kappa):
        self.loc, self.kappa = float(loc), float(kappa)
        if self.kappa not in self.tails:
            self.tails[self.kappa] = VonMisesTail(self.kappa)
        self.tail = self.tails[self.kappa]

    def _lower(self, a):
        """F(−a) for a in [0, π], floored at 1e-300."""
        return np.maximum(self.tail.lower_cdf(a), 1e-300)

    def logpdf(self, x):
        return stats.vonmises.logpdf(_wrap(np.asarray(x) - self.loc), self.kappa)

    def to_noise(self, x):
        phi = _wrap(np.asarray(x) - self.loc)
        return -np.sign(phi) * special.ndtri(self._lower(np.abs(phi)))

    def from_noise(self, z):
        z = np.asarray(z, dtype=np.float64)
        target = special.ndtr(-np.abs(z))
        lo, hi = np.zeros_like(z), np.full_like(z, math.pi)   # F(−a) decreases in a
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self._lower(mid) > target
            lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        return _wrap(self.loc + np.sign(z) * 0.5 * (lo + hi))


def _tanh_sinh(a, b, h=1 / 64, s_max=4.0):
    """Nodes and weights of tanh–sinh quadrature on [a, b] (endpoint singularities are harmless)."""
    s = np.arange(-s_max, s_max + h / 2, h)
    u = np.tanh(0.5 * math.pi * np.sinh(s))
    w = 0.5 * (b - a) * h * 0.5 * math.pi * np.cosh(s) / np.cosh(0.5 * math.pi * np.sinh(s)) ** 2
    return 0.5 * (a + b) + 0.5 * (b - a) * u, w


def coordinate_kl(m0_t, m0_prev, m1_t, m1_prev, x_t, rho, nodes=None, weights=None):
    """KL of the copula kernels of one coordinate: ∫ N(e; 0, 1) [log k0(y) − log k1(y)] de with
    z = ρ ξ_t + sqrt(1 − ρ²) e, y = F0⁻¹(Φ(z)); m0_* are the marginals under x0 at steps t and t − 1,
    m1_* under x̂0. Default nodes: Gauss–Hermite."""
    if nodes is None:
        nodes, weights = _GH_E, _GH_W
    else:
        weights = weights * np.exp(-0.5 * nodes ** 2) / math.sqrt(2 * math.pi)
    xi_t, xi_t_hat = m0_t.to_noise(x_t), m1_t.to_noise(x_t)
    z = rho * xi_t + math.sqrt(1 - rho * rho) * nodes
    y = m0_prev.from_noise(z)
    log_k0 = m0_prev.logpdf(y) + _log_ratio(z, rho * xi_t, rho)
    log_k1 = m1_prev.logpdf(y) + _log_ratio(m1_prev.to_noise(y), rho * xi_t_hat, rho)
    return float(np.sum(weights * (log_k0 - log_k1)))


def quadrature_oracle(x_t, x0, x0_hat, t, marginal, kl_1d=coordinate_kl, rhos=RHOS):
    """Σ over coordinates of the 1-D kernel KL, per (example, ρ); ``marginal(x0_i, step, i)``
    returns the marginal of coordinate i (Scalar, BetaScalar or Circular)."""
    x_t, x0, x0_hat = (a.numpy().reshape(a.shape[0], -1) for a in (x_t, x0, x0_hat))
    out = np.zeros((x0.shape[0], len(rhos)))
    for e in range(x0.shape[0]):
        s = int(t[e])
        for j, rho in enumerate(rhos):
            out[e, j] = sum(kl_1d(marginal(x0[e, i], s, i), marginal(x0[e, i], s - 1, i),
                                  marginal(x0_hat[e, i], s, i), marginal(x0_hat[e, i], s - 1, i), x_t[e, i], rho)
                            for i in range(x0.shape[1]))
    return out


def _fixed(fam, steps, x0, x0_hat, seed):
    """Tensors (x_t, x0, x̂0, t) of the examples; x_t is one draw of q_t(· | x0)."""
    x0, x0_hat, t = torch.tensor(x0, dtype=F64), torch.tensor(x0_hat, dtype=F64), torch.tensor(steps)
    x_t = fam.sample(x0, t, torch.Generator().manual_seed(seed))
    return x_t, x0, x0_hat, t


def pointwise_1d(fam, examples, marginal, xi_atol, y_rtol, rho=RHOS[-1]):
    """The family's noise maps and log density against the scipy marginals on the quadrature's own
    points (fresh noise e ∈ [−6, 6]): same ξ → same y, same y → same ξ̂ under x̂0 and same log q."""
    x_t, x0, x0_hat, t = examples
    e = np.linspace(-6.0, 6.0, 49)
    for k in range(x0.shape[0]):
        s, n = int(t[k]), e.size
        coords = range(x0.shape[1])
        m0t, m0p, m1t, m1p = ([marginal(float(ref[k, i]), step, i) for i in coords]
                              for ref, step in ((x0, s), (x0, s - 1), (x0_hat, s), (x0_hat, s - 1)))
        xi_t = np.array([m.to_noise(float(x_t[k, i])) for i, m in enumerate(m0t)])
        xi_t_hat = np.array([m.to_noise(float(x_t[k, i])) for i, m in enumerate(m1t)])
        z = rho * xi_t[None] + math.sqrt(1 - rho * rho) * e[:, None]
        ys = [m.from_noise(z[:, i]) for i, m in enumerate(m0p)]
        y = np.stack([yi[0] if yi.ndim == 2 else yi for yi in ys], 1)       # BetaScalar: (v, 1 − v)
        rep = lambda a: a[k:k + 1].expand(n, *a.shape[1:])  # noqa: E731
        tt = torch.full((n,), s)
        got_xi_t = fam.to_noise(rep(x_t), rep(x0), tt)[0].numpy()
        np.testing.assert_allclose(got_xi_t, xi_t, atol=xi_atol)
        np.testing.assert_allclose(fam.to_noise(rep(x_t), rep(x0_hat), tt)[0].numpy(), xi_t_hat, atol=xi_atol)
        got_y = fam.from_noise(torch.as_tensor(z), rep(x0), tt - 1).numpy()
        # relative error on the positive families (gamma, beta: draws as small as 1e-60), absolute otherwise
        floor = 0.0 if fam.domain in ('positive', 'unit-box') else 1.0
        y_err = np.abs(fam.difference(torch.as_tensor(got_y), torch.as_tensor(y)).numpy()) / (np.abs(y) + floor)
        assert y_err.max() < y_rtol, y_err.max()
        z_hat = np.stack([m.to_noise(yi) for m, yi in zip(m1p, ys)], 1)
        np.testing.assert_allclose(fam.to_noise(torch.as_tensor(y), rep(x0_hat), tt - 1).numpy(), z_hat, atol=xi_atol)
        for ms, ref in ((m0p, x0), (m1p, x0_hat)):
            want = sum(m.logpdf(yi) for m, yi in zip(ms, ys))
            np.testing.assert_allclose(fam.log_prob(torch.as_tensor(y), rep(ref), tt - 1).numpy(), want,
                                       rtol=1e-9, atol=1e-9)


def _check_1d(name, fam, examples, marginal, seed, kl_1d=coordinate_kl, xi_atol=1e-7, y_rtol=1e-8):
    t0 = time.perf_counter()
    x_t, x0, x0_hat, t = examples
    pointwise_1d(fam, examples, marginal, xi_atol, y_rtol)
    mean, se = engine_means(fam, x_t, x0, x0_hat, t, seed)
    oracle = quadrature_oracle(x_t, x0, x0_hat, t, marginal, kl_1d)
    # the quadrature itself: at ρ = 0 the kernel is the marginal and its KL the family's closed form
    at_zero = quadrature_oracle(x_t, x0, x0_hat, t, marginal, kl_1d, rhos=(0.0,))[:, 0]
    np.testing.assert_allclose(at_zero, fam.kl(x0, x0_hat, t - 1).numpy(), rtol=1e-9)
    z = report(name, mean, se, oracle)
    print(f"{name}: {time.perf_counter() - t0:.1f} s")
    assert (oracle > 0).all()
    assert (z < Z_SE).all(), z
    return x_t, x0, x0_hat, t, oracle


def test_gaussian_against_quadrature_and_closed_form():
    """N(m_t x0, v_t) per coordinate (``mean``, ``var`` arrays); the quadrature equals coupled_kl."""
    fam = toy("gaussian")
    m, v = fam.mean.numpy(), fam.var.numpy()
    examples = _fixed(fam, [1, 3, 5, 8],
                      [[0.4, -1.2, 2.0], [1.5, 0.3, -0.7], [-2.0, 0.5, 1.0], [0.8, -0.1, -1.9]],
                      [[0.42, -1.18, 1.97], [1.2, 0.5, -0.6], [-1.0, 1.1, 0.4], [-0.5, 1.0, -0.2]], seed=11)

    def marginal(x0, s, i):
        return Scalar(stats.norm(m[s] * x0, math.sqrt(v[s])))

    x_t, x0, x0_hat, t, oracle = _check_1d("gaussian", fam, examples, marginal, seed=12)
    # the closed form agrees with the quadrature (an exact identity: the integrand is quadratic in e)
    for j, rho in enumerate(RHOS):
        closed = kernel_kl(fam, x_t, x0, x0_hat, t, torch.tensor(rho, dtype=F64), monte_carlo=False).numpy()
        np.testing.assert_allclose(closed, oracle[:, j], rtol=1e-12)


def test_gamma_against_quadrature():
    """Gamma(α_t, rate α_t (ξ_t + (1 − ξ_t)/x0)) per coordinate (``shape``, ``xi`` arrays)."""
    fam = toy("gamma")
    alpha, xi = fam.shape.numpy(), fam.xi.numpy()
    examples = _fixed(fam, [1, 3, 6, 8],
                      [[1.3, 0.6], [0.5, 2.0], [1.0, 3.0], [0.4, 1.5]],
                      [[1.25, 0.65], [0.7, 1.6], [2.0, 1.0], [1.2, 0.5]], seed=21)

    def marginal(x0, s, i):
        rate = alpha[s] * (xi[s] + (1 - xi[s]) / x0)
        return Scalar(stats.gamma(alpha[s], scale=1 / rate))

    _check_1d("gamma", fam, examples, marginal, seed=22)


def _circular_kl(m0_t, m0_prev, m1_t, m1_prev, x_t, rho):
    """coordinate_kl with tanh–sinh nodes on [−10, e*] and [e*, 10], e* the fresh noise that puts y
    at the antipode of x̂0 (where log k1 → −∞ logarithmically)."""
    s = math.sqrt(1 - rho * rho)
    antipode = _wrap(m1_prev.loc + math.pi)
    e_star = float((m0_prev.to_noise(antipode) - rho * m0_t.to_noise(x_t)) / s)
    pieces = [(-10.0, e_star), (e_star, 10.0)] if abs(e_star) < 10 else [(-10.0, 10.0)]
    nodes, weights = zip(*(_tanh_sinh(a, b) for a, b in pieces))
    return coordinate_kl(m0_t, m0_prev, m1_t, m1_prev, x_t, rho, np.concatenate(nodes), np.concatenate(weights))


def test_von_mises_against_quadrature():
    """VM(x0_i, κ_t) per angle (``kappa`` array); examples cross the ±π seam."""
    fam = toy("von-mises")
    kappa = fam.kappa.numpy()
    examples = _fixed(fam, [1, 3, 5, 8],
                      [[0.3, -3.0], [-1.0, 2.5], [2.0, -2.0], [0.0, 1.0]],
                      [[0.36, 3.13], [-0.6, 2.9], [3.0, -0.5], [2.5, -2.0]], seed=31)

    def marginal(x0, s, i):
        return Circular(x0, kappa[s])

    _check_1d("von-mises", fam, examples, marginal, seed=32, kl_1d=_circular_kl)


def test_beta_against_quadrature():
    """Beta(1 + ν_t x0, 1 + ν_t (1 − x0)) per coordinate (``nu`` array)."""
    _require_bijection("beta")
    fam = toy("beta")
    nu = fam.nu.numpy()
    examples = _fixed(fam, [1, 3, 5, 8],
                      [[0.2, 0.5, 0.9], [0.1, 0.6, 0.75], [0.05, 0.5, 0.95], [0.3, 0.7, 0.5]],
                      [[0.22, 0.48, 0.88], [0.2, 0.5, 0.85], [0.4, 0.3, 0.6], [0.9, 0.1, 0.5]], seed=41)

    def marginal(x0, s, i):
        return BetaScalar(1 + nu[s] * x0, 1 + nu[s] * (1 - x0))

    _check_1d("beta", fam, examples, marginal, seed=42)


# --------------------------------------------------------------------------------------------
# Multivariate families: an independent Monte Carlo estimate
# --------------------------------------------------------------------------------------------
class Oracle:
    """The copula kernel of one family written with numpy/scipy: ``from_noise(z, x0, s)``,
    ``to_noise(x, x0, s)`` (z of shape (N, k)) and ``logpdf(x, x0, s)`` for ONE x0 (many x)."""

    def kernel_draws(self, x_t, x0, x0_hat, s, rho, rng, n):
        """n draws of [log k0(y) − log k1(y)], y ~ k(· | x_t, x0), plus the draws (z, y, ξ̂_y)."""
        xi_t = self.to_noise(x_t[None], x0, s)[0]
        xi_t_hat = self.to_noise(x_t[None], x0_hat, s)[0]
        z = rho * xi_t + math.sqrt(1 - rho * rho) * rng.standard_normal((n, xi_t.shape[0]))
        y = self.from_noise(z, x0, s - 1)
        z_hat = self.to_noise(y, x0_hat, s - 1)
        log_k0 = self.logpdf(y, x0, s - 1) + _log_ratio(z, rho * xi_t, rho).sum(1)
        log_k1 = self.logpdf(y, x0_hat, s - 1) + _log_ratio(z_hat, rho * xi_t_hat, rho).sum(1)
        return log_k0 - log_k1, z, y, z_hat


def _check_multivariate(name, fam, oracle, x_t, x0, x0_hat, t, seed, xi_atol=1e-7):
    t_start = time.perf_counter()
    mean, se = engine_means(fam, x_t, x0, x0_hat, t, seed)
    t_engine = time.perf_counter() - t_start
    rng = np.random.default_rng(seed)
    o_mean, o_se = np.zeros_like(mean), np.zeros_like(se)
    xn, x0n, xhn = x_t.numpy(), x0.numpy(), x0_hat.numpy()
    for e in range(x0.shape[0]):
        s = int(t[e])
        for j, rho in enumerate(RHOS):
            draws, z, y, z_hat = oracle.kernel_draws(xn[e], x0n[e], xhn[e], s, rho, rng, R)
            assert np.isfinite(draws).all()
            o_mean[e, j], o_se[e, j] = draws.mean(), draws.std(ddof=1) / math.sqrt(R)
            if j == len(RHOS) - 1:   # pointwise: the family's maps and densities on the oracle's draws
                n = 200
                rep = lambda a: torch.as_tensor(a)[None].expand(n, *a.shape).clone()  # noqa: E731
                zt, yt = torch.as_tensor(z[:n]), torch.as_tensor(y[:n])
                np.testing.assert_allclose(fam.from_noise(zt, rep(x0n[e]), s - 1).numpy(), y[:n],
                                           rtol=1e-8, atol=1e-10)
                np.testing.assert_allclose(fam.to_noise(yt, rep(x0n[e]), s - 1).numpy(), z[:n], atol=xi_atol)
                np.testing.assert_allclose(fam.to_noise(yt, rep(xhn[e]), s - 1).numpy(), z_hat[:n], atol=xi_atol)
                np.testing.assert_allclose(fam.to_noise(rep(xn[e]), rep(xhn[e]), s).numpy()[0],
                                           oracle.to_noise(xn[e][None], xhn[e], s)[0], atol=xi_atol)
                for ref in (x0n[e], xhn[e]):
                    np.testing.assert_allclose(fam.log_prob(yt, rep(ref), s - 1).numpy(),
                                               oracle.logpdf(y[:n], ref, s - 1), rtol=1e-9, atol=1e-8)
                # the per-draw integrand from the family's pieces at the same (z, y)
                r = torch.full((n,), rho, dtype=F64)[:, None]
                var = 1 - r * r
                lr = lambda q, m: (-0.5 * (q - m) ** 2 / var - 0.5 * torch.log(var) + 0.5 * q * q).sum(1)  # noqa: E731
                xi_t = fam.to_noise(rep(xn[e]), rep(x0n[e]), s)
                xi_t_hat = fam.to_noise(rep(xn[e]), rep(xhn[e]), s)
                fam_draws = (fam.log_prob(yt, rep(x0n[e]), s - 1) + lr(zt, r * xi_t)
                             - fam.log_prob(yt, rep(xhn[e]), s - 1)
                             - lr(fam.to_noise(yt, rep(xhn[e]), s - 1), r * xi_t_hat))
                np.testing.assert_allclose(fam_draws.numpy(), draws[:n], rtol=1e-6, atol=1e-5)
    z = report(name, mean, se, o_mean, o_se)
    print(f"{name}: engine {t_engine:.1f} s, total {time.perf_counter() - t_start:.1f} s")
    assert (o_mean > 0).all()
    assert (z < Z_SE).all(), z


# ---------------------------------------------------------------- Wishart
class WishartOracle(Oracle):
    """W_p(n_t, V_t), V_t = M_t⁻¹/n_t, M_t = ξ_t X0⁻¹ + (1 − ξ_t) I (``df``, ``xi`` arrays);
    Bartlett map X = L A Aᵀ Lᵀ, L = chol V_t, A_ii² = χ²_{n−i} quantile of Φ(ξ_ii), A_ij = ξ_ij
    (i > j), ξ packed row by row over the lower triangle."""

    def __init__(self, df, xi, p):
        self.df, self.xi, self.p = df, xi, p
        self.rows, self.cols = np.tril_indices(p)
        self.diag = np.flatnonzero(self.rows == self.cols)

    def scale(self, x0, s):
        m = self.xi[s] * np.linalg.inv(x0) + (1 - self.xi[s]) * np.eye(self.p)
        return np.linalg.inv(m) / self.df[s]

    def _chi2(self, s):
        return [stats.chi2(self.df[s] - i) for i in range(self.p)]

    def from_noise(self, z, x0, s):
        a = np.zeros((z.shape[0], self.p, self.p))
        a[:, self.rows, self.cols] = z
        for i, c in enumerate(self._chi2(s)):
            a[:, i, i] = np.sqrt(Scalar(c).from_noise(z[:, self.diag[i]]))
        la = np.linalg.cholesky(self.scale(x0, s)) @ a
        return la @ np.swapaxes(la, -1, -2)

    def to_noise(self, x, x0, s):
        a = np.linalg.solve(np.linalg.cholesky(self.scale(x0, s)), np.linalg.cholesky(x))
        z = a[:, self.rows, self.cols].copy()
        for i, c in enumerate(self._chi2(s)):
            z[:, self.diag[i]] = Scalar(c).to_noise(a[:, i, i] ** 2)
        return z

    def logpdf(self, x, x0, s):
        """log W_p(X; n, V) written out (scipy's wishart.logpdf loops over samples in Python), checked
        against scipy on the first draws."""
        n, v, p = self.df[s], self.scale(x0, s), self.p
        logdet_x = np.linalg.slogdet(x)[1]
        out = (0.5 * (n - p - 1) * logdet_x - 0.5 * np.einsum("ij,nji->n", np.linalg.inv(v), x)
               - 0.5 * n * p * math.log(2) - 0.5 * n * np.linalg.slogdet(v)[1] - special.multigammaln(0.5 * n, p))
        head = min(len(x), 64)
        np.testing.assert_allclose(out[:head], stats.wishart.logpdf(np.moveaxis(x[:head], 0, -1), df=n, scale=v),
                                   rtol=1e-10, atol=1e-9)
        return out


def test_wishart_against_independent_monte_carlo():
    fam = toy("wishart")
    g = torch.Generator().manual_seed(51)
    t = torch.tensor([1, 3, 6, 8])
    x0 = toy_data(fam, 4, g)
    # x̂0 = B x0 Bᵀ with B = I + δ G, δ shrinking with the degrees of freedom of step t − 1
    delta = torch.tensor([0.03, 0.08, 0.2, 0.3], dtype=F64)[:, None, None]
    b = torch.eye(3, dtype=F64) + delta * torch.randn((4, 3, 3), generator=g, dtype=F64)
    x0_hat = b @ x0 @ b.transpose(-1, -2)
    x0_hat = 0.5 * (x0_hat + x0_hat.transpose(-1, -2))
    x_t = fam.sample(x0, t, g)
    oracle = WishartOracle(fam.df.numpy(), fam.xi.numpy(), 3)
    _check_multivariate("wishart", fam, oracle, x_t, x0, x0_hat, t, seed=52)


# ---------------------------------------------------------------- Dirichlet
class _Fraction:
    """v ~ Beta(a, b) with its noise map, carrying v and 1 − v separately so that neither tail
    loses precision (1 − v ~ Beta(b, a))."""

    def __init__(self, a, b):
        self.lo, self.hi = stats.beta(a, b), stats.beta(b, a)

    def from_noise(self, z):
        v_lo, w_hi = self.lo.ppf(special.ndtr(z)), self.hi.ppf(special.ndtr(-z))
        return np.where(z <= 0, v_lo, 1 - w_hi), np.where(z <= 0, 1 - v_lo, w_hi)

    def to_noise(self, v, w):
        """ξ from v and w = 1 − v: Φ⁻¹(F(v)) below the median, −Φ⁻¹(F_{b,a}(w)) above it."""
        lower = v <= self.lo.median()
        with np.errstate(divide="ignore"):
            return np.where(lower, special.ndtri_exp(self.lo.logcdf(v)), -special.ndtri_exp(self.hi.logcdf(w)))


class DirichletOracle(Oracle):
    """Dir(1 + ν_t x0) (``nu`` array) with the stick-breaking map of dirichlet.py: v_k = x_k / Σ_{j≥k} x_j
    ~ Beta(α_k, Σ_{j>k} α_j), k = 0..K − 2, ξ_k = Φ⁻¹(F(v_k)); x_k = v_k Π_{j<k} (1 − v_j)."""

    def __init__(self, nu):
        self.nu = nu

    def _fractions(self, x0, s):
        alpha = 1 + self.nu[s] * x0
        rest = np.cumsum(alpha[::-1])[::-1]
        return [_Fraction(alpha[k], rest[k + 1]) for k in range(len(alpha) - 1)]

    def from_noise(self, z, x0, s):
        x, left = np.zeros((z.shape[0], z.shape[1] + 1)), np.ones(z.shape[0])
        for k, frac in enumerate(self._fractions(x0, s)):
            v, w = frac.from_noise(z[:, k])
            x[:, k], left = left * v, left * w
        x[:, -1] = left
        return x

    def to_noise(self, x, x0, s):
        tail = np.cumsum(x[:, ::-1], 1)[:, ::-1]          # Σ_{j≥k} x_j
        return np.stack([frac.to_noise(x[:, k] / tail[:, k], tail[:, k + 1] / tail[:, k])
                         for k, frac in enumerate(self._fractions(x0, s))], 1)

    def logpdf(self, x, x0, s):
        return stats.dirichlet.logpdf(x.T, 1 + self.nu[s] * x0)


def test_dirichlet_against_independent_monte_carlo():
    _require_bijection("dirichlet")
    fam = toy("dirichlet")
    g = torch.Generator().manual_seed(61)
    t = torch.tensor([1, 3, 5, 8])
    x0 = toy_data(fam, 4, g)
    delta = torch.tensor([0.05, 0.3, 0.8, 1.5], dtype=F64)[:, None]
    x0_hat = torch.softmax(torch.log(x0) + delta * torch.randn((4, 3), generator=g, dtype=F64), -1)
    x_t = fam.sample(x0, t, g)
    _check_multivariate("dirichlet", fam, DirichletOracle(fam.nu.numpy()), x_t, x0, x0_hat, t, seed=62)


# ---------------------------------------------------------------- von Mises–Fisher
class VMFOracle(Oracle):
    """vMF_d(x0, κ_t) (``kappa`` array), d ∈ {3, 5}, with the map of vmf.py: x = Q [cos θ; sin θ v],
    Q = I − 2 u uᵀ/‖u‖², u = x0 − e_1 (Q = I at x0 = e_1; the frame with Q e_1 = x0);
    G(θ) = P(Θ ≤ θ) = Φ(−ξ_0); v ∈ S^{d−2} by hyperspherical angles, polar angles φ_j with density
    ∝ sin^{m−j} φ_j and G(φ_j) = Φ(−ξ_j), the azimuth φ_m = π erf(ξ_m/√2) uniform on (−π, π).

    G(θ) in s = 1 − cos θ: the density of s is ∝ e^{−κs} (s(2 − s))^{(d−3)/2}, so with the regularised
    incomplete gamma P, G ∝ P(1, κs) (d = 3) and G ∝ P(2, κs) − P(3, κs)/κ (d = 5)."""

    def __init__(self, kappa, d):
        assert d in (3, 5)
        self.kappa, self.d = kappa, d

    def _g(self, s_val, k):
        if self.d == 3:
            num = lambda v: special.gammainc(1, k * v)  # noqa: E731
        else:
            num = lambda v: special.gammainc(2, k * v) - special.gammainc(3, k * v) / k  # noqa: E731
        return num(s_val) / num(2.0)

    @staticmethod
    def _reflect(x0, y):
        u = x0.copy()
        u[0] -= 1.0
        if u @ u == 0.0:
            return y.copy()
        return y - np.outer(y @ u, u) * 2 / (u @ u)

    @staticmethod
    def _bisect(f, target, lo, hi, iters=80):
        """Solve f(x) = target for increasing f by bisection, elementwise."""
        lo, hi = np.full_like(target, lo), np.full_like(target, hi)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = f(mid) < target
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    @staticmethod
    def _g_sin2(phi):
        """CDF of a polar angle with density ∝ sin² φ on [0, π]."""
        return (phi - np.sin(phi) * np.cos(phi)) / math.pi

    def from_noise(self, z, x0, s):
        k = self.kappa[s]
        s_val = self._bisect(lambda v: self._g(v, k), special.ndtr(-z[:, 0]), 0.0, 2.0)
        cos_t, sin_t = 1 - s_val, np.sqrt(s_val * (2 - s_val))
        az = math.pi * special.erf(z[:, -1] / math.sqrt(2))
        if self.d == 3:
            v = np.stack([np.cos(az), np.sin(az)], 1)
        else:   # m = 3: φ_1 ∝ sin² φ, φ_2 ∝ sin φ (G = sin²(φ/2)), azimuth
            p1 = self._bisect(self._g_sin2, special.ndtr(-z[:, 1]), 0.0, math.pi)
            p2 = 2 * np.arcsin(np.sqrt(special.ndtr(-z[:, 2])))
            v = np.stack([np.cos(p1), np.sin(p1) * np.cos(p2), np.sin(p1) * np.sin(p2) * np.cos(az),
                          np.sin(p1) * np.sin(p2) * np.sin(az)], 1)
        y = np.concatenate([cos_t[:, None], sin_t[:, None] * v], 1)
        return self._reflect(x0, y)

    def to_noise(self, x, x0, s):
        y = self._reflect(x0, x)
        tn = np.linalg.norm(y[:, 1:], axis=1)
        theta = np.arctan2(tn, y[:, 0])
        xi0 = -special.ndtri(self._g(2 * np.sin(theta / 2) ** 2, self.kappa[s]))
        v = y[:, 1:] / tn[:, None]
        az = np.arctan2(v[:, -1], v[:, -2])
        xi_az = special.ndtri(0.5 + az / (2 * math.pi))
        if self.d == 3:
            return np.stack([xi0, xi_az], 1)
        p1 = np.arctan2(np.linalg.norm(v[:, 1:], axis=1), v[:, 0])
        p2 = np.arctan2(np.linalg.norm(v[:, 2:], axis=1), v[:, 1])
        return np.stack([xi0, -special.ndtri(self._g_sin2(p1)), -special.ndtri(np.sin(p2 / 2) ** 2), xi_az], 1)

    def logpdf(self, x, x0, s):
        return stats.vonmises_fisher(x0 / np.linalg.norm(x0), self.kappa[s]).logpdf(x)


@pytest.mark.parametrize("d", [3, 5])
def test_vmf_against_independent_monte_carlo(d):
    _require_bijection("vmf")
    fam = toy("vmf", dim=d)
    g = torch.Generator().manual_seed(70 + d)
    t = torch.tensor([1, 3, 5, 8])
    x0 = toy_data(fam, 4, g)
    delta = torch.tensor([0.05, 0.25, 0.8, 1.0], dtype=F64)[:, None]
    x0_hat = torch.nn.functional.normalize(x0 + delta * torch.randn((4, d), generator=g, dtype=F64), dim=1)
    x_t = fam.sample(x0, t, g)
    _check_multivariate(f"vmf d={d}", fam, VMFOracle(fam.kappa.numpy(), d), x_t, x0, x0_hat, t, seed=80 + d)
