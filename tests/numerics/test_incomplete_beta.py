"""Oracles for mstar_engine.numerics.incomplete_beta (the Beta noise map of MATH.md §2, §4).

scipy is the independent oracle: ``betainc``/``betaincc`` for the CDF and ``betaincinv``/
``betainccinv`` for the quantiles, always called on the side where its argument is small
(x ≤ 1/2: I_x(a, b); otherwise 1 − I_{1−x}(b, a) with 1 − x = sigmoid(−u)), so that neither x nor
1 − x is rounded. Tolerances, as measured on the grids below (a, b ∈ {0.05, …, 1e5}):

* log CDF: |Δ log F| ≤ 3e-11 (measured 1.7e-11 at a = 1e5, b = 0.05 near the fraction's switch;
  ≤ 1e-11 asserted, 4e-12 measured, for a, b ≥ 1: a = 1e5, b = 2.5 at x ≈ 1 − 8e-5, where mpmath
  sides with scipy), plus the conditioning of the comparison (scipy gets x rounded, which moves u by
  ~2 ulp and log F by 2 ulp · d log F/du).
* quantiles, backward error: the distance in x and in 1 − x (relative) from our quantile to the
  point where scipy's own CDF reaches p, first order through the density: ≤ 1e-10 asserted,
  ~1.3e-12 measured (worst at a = 1e5, b ≈ 1).
* quantiles, forward error against ``betaincinv``: ≤ 1e-10 relative in x and in 1 − x wherever
  scipy's inverse is consistent with its own CDF to 1e-12. scipy's inverse is off by up to ~1e-9
  for (a, b) = (1e5, 1e3) (checked with mpmath: ours satisfies F(x) = p to 1e-15 there) and fails
  for p ≈ 1e-300 (its CDF underflows inside: betainc(1000, 10, x) returns 1e-300·e^{-0.008});
  those cells are checked by the backward error and, at p = 1e-300, against mpmath quadrature.
* round trip normal → logit → normal: |Δξ| ≤ 1e-10 (measured ≤ 1e-12 for |ξ| ≤ 37).
"""
import numpy as np
import pytest
import scipy.special as sc
import torch

from mstar_engine.numerics import beta_map as BM
from mstar_engine.numerics import incomplete_beta as IB
from mstar_engine.numerics.special import Z_MAX, log_ndtr

F64 = torch.float64
SHAPES = [0.05, 0.3, 0.7, 1.0, 1.3, 2.5, 10.0, 100.0, 1e3, 9e3, 1e5]
PROBS = [1e-300, 1e-200, 1e-100, 1e-50, 1e-20, 1e-10, 1e-5, 1e-3, 0.01, 0.1, 0.3, 0.5]


@pytest.fixture(params=["scipy", "torch"])
def backend(request, monkeypatch):
    """The noise maps' CPU implementation under test: scipy.special, or the torch numerics that
    accelerators run."""
    monkeypatch.setattr(BM, "CPU_BACKEND", request.param)
    return request.param


def grid(shapes=SHAPES, probs=PROBS):
    a, b, p = np.meshgrid(shapes, shapes, probs, indexing="ij")
    return a.ravel(), b.ravel(), p.ravel()


def T(v):
    return torch.as_tensor(np.asarray(v, dtype=np.float64))


def scipy_log_cdf(u, a, b, upper):
    """log I_x(a, b) (or its complement) from scipy, its argument on the small side."""
    x, y = sc.expit(u), sc.expit(-u)
    with np.errstate(divide="ignore"):
        lower = np.where(x <= 0.5, np.log(sc.betainc(a, b, x)), np.log(sc.betaincc(b, a, y)))
        upp = np.where(x <= 0.5, np.log(sc.betaincc(a, b, x)), np.log(sc.betainc(b, a, y)))
    return np.where(upper, upp, lower)


def quantiles(a, b, p, upper):
    """Our quantile of the lower (upper) tail probability p: u = logit F⁻¹(Φ(∓|Φ⁻¹(p)|))."""
    xi = sc.ndtri(p) * (-1.0 if upper else 1.0)
    return BM.beta_logit_icdf_normal(T(xi), T(a), T(b)).numpy()


@pytest.mark.parametrize("upper", [False, True])
def test_log_cdf_matches_scipy(upper):
    a, b, p = grid()
    for at_upper in (False, True):  # points in the lower and the upper half
        u = quantiles(a, b, p, at_upper)
        ours = IB.beta_log_cdf(T(u), T(a), T(b), upper=upper).numpy()
        ref = scipy_log_cdf(u, a, b, upper)
        ok = np.isfinite(ref) & (ref > -640)  # scipy's CDF underflows internally near 1e-300
        slope = np.exp(IB.beta_logit_log_density(T(u), T(a), T(b)).numpy() - ours)
        err = np.abs(ours - ref) - 4 * 2.2e-16 * slope
        assert ok.sum() > 0.8 * ok.size  # all but the points at p = 1e-300
        assert err[ok].max() < 3e-11, err[ok].max()
        big = ok & (a >= 1) & (b >= 1)
        assert err[big].max() < 1e-11, err[big].max()


def test_log_cdf_tails_complement_and_per_element_flag():
    a, b = T([2.5, 1e3, 0.3, 9e3]), T([7.0, 1e3, 4.0, 1.0])
    u = T([-1.0, 0.01, -30.0, 12.0])
    lower = IB.beta_log_cdf(u, a, b)
    upper = IB.beta_log_cdf(u, a, b, upper=True)
    assert torch.allclose(torch.logaddexp(lower, upper), torch.zeros(4, dtype=F64), atol=1e-14)
    mixed = IB.beta_log_cdf(u, a, b, upper=torch.tensor([False, True, False, True]))
    assert torch.equal(mixed, torch.where(torch.tensor([False, True, False, True]), upper, lower))
    # Beta(a, b) at u is Beta(b, a) at −u
    assert torch.allclose(IB.beta_log_cdf(-u, b, a, upper=True), lower, rtol=1e-13, atol=0)


def test_log_density_matches_mpmath():
    """Against mpmath: scipy's betaln itself is off by ~6e-10 at a = b = 1e5 (lnΓ cancellation)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    a, b, p = grid(shapes=[0.05, 1.0, 2.5, 100.0, 9e3, 1e5], probs=[1e-100, 1e-10, 0.01, 0.3, 0.5])
    u = quantiles(a, b, p, False)
    ours = IB.beta_logit_log_density(T(u), T(a), T(b)).numpy()
    for oi, ui, ai, bi in zip(ours, u, a, b):
        A, B, U = mpmath.mpf(ai), mpmath.mpf(bi), mpmath.mpf(ui)
        ref = (-A * mpmath.log1p(mpmath.exp(-U)) - B * mpmath.log1p(mpmath.exp(U))
               - mpmath.loggamma(A) - mpmath.loggamma(B) + mpmath.loggamma(A + B))
        # the terms a log x, b log(1 − x) reach ~1e5 here: 1e-16 relative of them is the floor
        scale = 1 + abs(ai * float(mpmath.log1p(mpmath.exp(-U)))) + abs(bi * float(mpmath.log1p(mpmath.exp(U))))
        assert abs(oi - float(ref)) < 1e-14 * scale, (ai, bi, ui, oi - float(ref))


@pytest.mark.parametrize("upper", [False, True])
def test_quantiles_backward_error_against_scipy_cdf(upper, backend):
    a, b, p = grid()
    u = quantiles(a, b, p, upper)
    assert np.isfinite(u).all()
    log_f = scipy_log_cdf(u, a, b, upper)
    # out of scipy's reach: p = 1e-300 (its CDF underflows inside) and x below the float range
    ok = np.isfinite(log_f) & (p > 1e-290) & (sc.expit(u) > 1e-300) & (sc.expit(-u) > 1e-300)
    # first order: du = (log F(u) − log p) · F / p_U, then x and 1 − x move by (1 − x) du and x du
    du = (log_f - np.log(p)) * np.exp(np.log(p) - IB.beta_logit_log_density(T(u), T(a), T(b)).numpy())
    du = np.where(ok, du, 0.0)
    rel_x, rel_y = np.abs(du) * sc.expit(-u), np.abs(du) * sc.expit(u)
    assert ok.sum() > 0.85 * ok.size
    assert rel_x[ok].max() < 1e-10 and rel_y[ok].max() < 1e-10, (rel_x[ok].max(), rel_y[ok].max())


@pytest.mark.parametrize("upper", [False, True])
def test_quantiles_match_scipy_inverse(upper, backend):
    a, b, p = grid()
    u = quantiles(a, b, p, upper)
    if upper:  # x with 1 − I_x(a, b) = p, and 1 − x with I_{1−x}(b, a) = p
        rx, ry = sc.betainccinv(a, b, p), sc.betaincinv(b, a, p)
    else:
        rx, ry = sc.betaincinv(a, b, p), sc.betainccinv(b, a, p)
    # scipy's inverse where it agrees with its own CDF (evaluated on the small side) to 1e-12
    representable = (rx > 1e-300) & (ry > 1e-300)
    r_u = np.log(np.where(representable, rx, 0.5)) - np.log(np.where(representable, ry, 0.5))
    consistent = representable & (np.abs(scipy_log_cdf(r_u, a, b, upper) - np.log(p)) < 1e-12)
    assert consistent.sum() > 0.75 * consistent.size, consistent.sum()
    rel_x = np.abs(sc.expit(u) - rx)[consistent] / rx[consistent]
    rel_y = np.abs(sc.expit(-u) - ry)[consistent] / ry[consistent]
    assert rel_x.max() < 1e-10 and rel_y.max() < 1e-10, (rel_x.max(), rel_y.max())


def test_deepest_tail_against_mpmath(backend):
    """p = 1e-300, where scipy's CDF underflows internally; mpmath quadrature of the logit density."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    cases = [(1.0, 1.0), (2.5, 100.0), (100.0, 100.0), (1e3, 10.0), (9e3, 1e5), (1e5, 1.3), (0.3, 4.0)]
    a, b = np.array(cases).T
    p = np.full(len(cases), 1e-300)
    for upper in (False, True):
        u = quantiles(a, b, p, upper)
        for ui, ai, bi in zip(u, a, b):
            A, B, U = mpmath.mpf(ai), mpmath.mpf(bi), mpmath.mpf(ui) * (-1 if upper else 1)
            if upper:
                A, B = B, A  # the upper tail of Beta(a, b) at u is the lower tail of Beta(b, a) at −u
            lnb = mpmath.loggamma(A) + mpmath.loggamma(B) - mpmath.loggamma(A + B)
            log_pdf = lambda v: -A * mpmath.log1p(mpmath.exp(-v)) - B * mpmath.log1p(mpmath.exp(v)) - lnb
            top = log_pdf(U)
            slope = A - (A + B) / (1 + mpmath.exp(-U))  # d log p_U/du > 0 in the lower tail
            pts = [U - k / slope for k in (400, 100, 30, 10, 3, 1, 0)]
            log_f = mpmath.log(mpmath.quad(lambda v: mpmath.exp(log_pdf(v) - top), [-mpmath.inf] + pts)) + top
            du = float(log_f - mpmath.log(1e-300)) / float(slope)  # F/p_U ≈ 1/slope in the far tail
            assert abs(du) < 1e-11 * (1 + abs(ui)), (ai, bi, upper, du)


@pytest.mark.parametrize("shape", [(1.0, 1.0), (1.3, 2.5), (1.0, 9e3), (100.0, 1e3), (9e3, 1e5), (1e5, 1e5), (0.3, 0.7)])
def test_normal_logit_round_trip(shape, backend):
    xi = torch.linspace(-37.0, 37.0, 741, dtype=F64)
    a, b = torch.full_like(xi, shape[0]), torch.full_like(xi, shape[1])
    u = BM.beta_logit_icdf_normal(xi, a, b)
    assert torch.isfinite(u).all() and (torch.diff(u) > 0).all()
    back = BM.normal_from_beta_logit(u, a, b)
    assert (back - xi).abs().max() < 1e-10, (back - xi).abs().max()


def test_normal_map_clamps_where_the_cdf_underflows(backend):
    a, b = T([2.0, 2.0]), T([3.0, 3.0])
    z = BM.normal_from_beta_logit(T([-800.0, 800.0]), a, b)
    assert torch.equal(z, T([-Z_MAX, Z_MAX]))


def test_gradients_against_finite_differences(backend):
    a = T([1.0, 1.3, 40.0, 9e3, 0.3])
    b = T([2.5, 1.0, 7.0, 1e3, 0.7])
    xi = T([-1.3, 0.2, 2.1, -0.4, 0.9]).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: BM.beta_logit_icdf_normal(v, a, b), (xi,))
    u = BM.beta_logit_icdf_normal(xi, a, b).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: BM.normal_from_beta_logit(v, a, b), (u,))
    assert torch.autograd.gradcheck(lambda v: IB.beta_log_cdf(v, a, b), (u,))
    assert torch.autograd.gradcheck(lambda v: IB.beta_log_cdf(v, a, b, upper=True), (u,))
    with pytest.raises(NotImplementedError):
        BM.beta_logit_icdf_normal(xi, a.clone().requires_grad_(True), b).sum().backward()
    clamped = T([-900.0]).requires_grad_(True)
    BM.normal_from_beta_logit(clamped, T([2.0]), T([2.0])).sum().backward()
    assert clamped.grad.item() == 0.0


def _schedule_like(n, seed, nu_max=1e4):
    g = torch.Generator().manual_seed(seed)
    nu = torch.exp(torch.empty(n, dtype=F64).uniform_(np.log(1e-3), np.log(nu_max), generator=g))
    x0 = torch.rand(n, dtype=F64, generator=g)
    return 1 + nu * x0, 1 + nu * (1 - x0), torch.randn(n, dtype=F64, generator=g)


def test_accelerator_path_equals_cpu_early_exit():
    """Accelerators run cf_terms(a, b) terms and ICDF_ITERS Halley iterations without testing
    convergence; on the CPU the same functions stop early. Both must agree."""
    a, b, xi = _schedule_like(3000, 1)
    z = -xi.abs()
    s = IB._shape(a, b)
    early = IB._lower_logit_icdf(log_ndtr(z), z, s, True)
    fixed = IB._lower_logit_icdf(log_ndtr(z), z, s, False, iters=IB.ICDF_ITERS)
    assert torch.allclose(early, fixed, rtol=1e-12, atol=1e-12)
    lo_e, up_e, _ = IB._log_tails(early, s, True)
    lo_f, up_f, _ = IB._log_tails(early, s, False)
    assert torch.allclose(lo_e, lo_f, rtol=1e-13, atol=1e-300) and torch.allclose(up_e, up_f, rtol=1e-13, atol=1e-300)


def test_cf_terms_bound_covers_random_points():
    g = torch.Generator().manual_seed(2)
    n = 4000
    a = torch.exp(torch.empty(n, dtype=F64).uniform_(np.log(1e-3), np.log(1e6), generator=g))
    b = torch.exp(torch.empty(n, dtype=F64).uniform_(np.log(1e-3), np.log(1e6), generator=g))
    x = (a + 1) / (a + b + 2) * torch.rand(n, dtype=F64, generator=g)  # the fraction's side
    for i in range(0, n, 500):
        sl = slice(i, i + 500)
        h_fixed = IB._lentz(x[sl], 1 - x[sl], a[sl], b[sl], False)
        h_early = IB._lentz(x[sl], 1 - x[sl], a[sl], b[sl], True)
        assert torch.allclose(h_fixed, h_early, rtol=1e-13, atol=0)


def test_grid_converges_within_the_accelerator_iterations():
    a, b, p = grid()
    z = T(sc.ndtri(p))
    s = IB._shape(T(a), T(b))
    full = IB._lower_logit_icdf(log_ndtr(z), z, s, True, iters=IB.ICDF_MAX_ITERS)
    few = IB._lower_logit_icdf(log_ndtr(z), z, s, False, iters=4)
    assert ((few - full).abs() / (1 + full.abs())).max() < 1e-12


def test_noise_map_needs_one_or_two_fraction_evaluations(monkeypatch):
    """a, b ≥ 1, standard normal ξ: ≤ 2 evaluations per element, ~1 for large ν (the torch numerics)."""
    monkeypatch.setattr(BM, "CPU_BACKEND", "torch")
    counts = []
    tails = IB._log_tails
    monkeypatch.setattr(IB, "_log_tails", lambda u, s, e: counts.append(u.numel()) or tails(u, s, e))
    a, b, xi = _schedule_like(20000, 3)
    BM.beta_logit_icdf_normal(xi, a, b)
    assert counts[0] == 20000 and sum(counts[2:]) < 0.02 * 20000, counts
    counts.clear()
    x0 = torch.rand(20000, dtype=F64, generator=torch.Generator().manual_seed(4))
    BM.beta_logit_icdf_normal(xi, 1 + 9e3 * x0, 1 + 9e3 * (1 - x0))
    assert sum(counts) < 1.1 * 20000, counts


def test_scipy_and_torch_maps_agree(monkeypatch):
    """The CPU's scipy path and the accelerators' torch path, on schedule-like shapes and noise
    including the far tails (|ξ| > DEEP_Z, which the scipy path hands to the torch numerics), split
    across threads (n > 2·CHUNK) and not."""
    a, b, xi = _schedule_like(2 * BM.CHUNK + 5, 7)
    xi[:40] = torch.linspace(-37.0, 37.0, 40, dtype=F64)
    out = {}
    for name in ("torch", "scipy"):
        monkeypatch.setattr(BM, "CPU_BACKEND", name)
        u = BM.beta_logit_icdf_normal(xi, a, b)
        out[name] = u, BM.normal_from_beta_logit(u, a, b), BM.beta_logit_icdf_normal(xi[:100], a[:100], b[:100])
    (u_t, z_t, _), (u_s, z_s, small_s) = out["torch"], out["scipy"]
    assert ((u_s - u_t).abs() / (1 + u_t.abs())).max() < 1e-11
    assert (z_s - z_t).abs().max() < 1e-10 and (z_s - xi).abs().max() < 1e-10
    assert torch.equal(small_s, u_s[:100])  # one thread or several: the same numbers


def test_nan_inputs_give_nan_at_once(monkeypatch, backend):
    """NaN noise or parameters (a diverging run's batch) give NaN after one round of fraction terms,
    not CF_MAX_TERMS × ICDF_MAX_ITERS of them."""
    steps = []
    real = IB._lentz_step
    monkeypatch.setattr(IB, "_lentz_step", lambda *args: steps.append(1) or real(*args))
    nan = float("nan")
    a, b = T([2.0, nan, 2.0]), T([3.0, 3.0, nan])
    assert torch.isnan(BM.beta_logit_icdf_normal(T([nan, 0.3, 0.3]), a, b)).all()
    assert torch.isnan(BM.normal_from_beta_logit(T([nan, 0.1, 0.1]), a, b)).all()
    assert len(steps) <= 2 * IB.CF_CHECK_EVERY, len(steps)
