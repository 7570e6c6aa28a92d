"""Oracles for the shared numerics of mstar_engine.numerics.special (MATH.md §4 "Gamma inverse CDFs").

Tolerances: the inverse CDF is solved to float64 precision of *torch's* regularised incomplete
gamma function, which itself is off from the exact value by up to ~2e-9 relative for shapes above
~20 near the bulk (e.g. P(20.9, 14.8)); the quantile error is that divided by the density term,
measured at ≤ 3e-10 relative against scipy on the grid below. We assert 1e-9 against scipy and
1e-12 for self-consistency (round trips through torch's own CDF).
"""
import numpy as np
import pytest
import scipy.special as sc
import torch

from mstar_engine.numerics import special as S

F64 = torch.float64


def grid(shapes, probs):
    a, p = np.meshgrid(shapes, probs, indexing="ij")
    return torch.tensor(a.ravel(), dtype=F64), torch.tensor(p.ravel(), dtype=F64)


SHAPES = np.geomspace(1e-4, 2e4, 33)
U_LOW = np.geomspace(1e-12, 0.5, 25)
U_ALL = np.concatenate([U_LOW, 1 - U_LOW[::-1][1:]])  # (1e-12, 1 − 1e-12), exact complements


def test_gamma_icdf_matches_scipy():
    a, u = grid(SHAPES, U_ALL)
    ours = S.gamma_icdf(u, a).numpy()
    ref = sc.gammaincinv(a.numpy(), u.numpy())
    normal = ref > 1e-290                           # quantiles that are representable numbers
    rel = np.abs(ours[normal] - ref[normal]) / ref[normal]
    assert rel.max() < 1e-9, f"max relative error {rel.max():.3g}"
    assert np.all(ours[~normal] < 1e-280)            # underflowing quantiles (tiny shapes) stay tiny
    assert np.all(np.isfinite(ours))


def test_gamma_icdf_upper_tail_and_log_input_match_scipy():
    a, q = grid(SHAPES, U_LOW)
    ours = S.gamma_icdf(q, a, upper=True).numpy()
    ref = sc.gammainccinv(a.numpy(), q.numpy())
    ok = ref > 1e-290
    assert (np.abs(ours[ok] - ref[ok]) / ref[ok]).max() < 1e-9
    ours_log = S.gamma_icdf(torch.log(q), a, log_input=True, upper=True).numpy()
    assert (np.abs(ours_log[ok] - ref[ok]) / ref[ok]).max() < 1e-9


def test_round_trip_through_torch_gammainc():
    a, u = grid(SHAPES, U_ALL)
    x = S.gamma_icdf(u, a)
    ok = x > 1e-290
    lower = u <= 0.5
    back_p = torch.special.gammainc(a, x)
    back_q = torch.special.gammaincc(a, x)
    err_low = ((back_p - u).abs() / u)[ok & lower]
    err_up = ((back_q - (1 - u)).abs() / (1 - u))[ok & ~lower]
    assert err_low.max() < 1e-12 and err_up.max() < 1e-12, (err_low.max(), err_up.max())


@pytest.mark.parametrize("upper", [False, True])
def test_log_icdf_tiny_shapes_and_deep_tails(upper):
    """In log space the solver works where x itself underflows (a = 1e-6: median ≈ e^{-693147})
    and for tail probabilities far below 1e-12; residual checked with the log-space CDF."""
    a, logp = grid(np.geomspace(1e-6, 3e4, 40), -np.geomspace(0.6931471805599453, 700, 40))
    y = S.gamma_log_icdf(logp, a, upper=upper)
    assert torch.isfinite(y).all()
    log_p, log_q = S.gamma_log_cdf(y, a)
    resid = ((log_q if upper else log_p) - logp).abs() / logp.abs()
    assert resid.max() < 1e-11, resid.max()
    # the fixed iteration count is converged: more iterations change nothing beyond rounding
    y_more = S.gamma_log_icdf(logp, a, upper=upper, iters=40)
    assert ((y - y_more).abs() / y_more.abs().clamp(min=1)).max() < 1e-13


def test_small_shape_asymptotic():
    """For tiny shapes P(a, x) ≈ x^a / Γ(a+1) up to O(x): log x = (log p + lnΓ(a+1)) / a."""
    a = torch.tensor([1e-6, 1e-4, 1e-3, 1e-2], dtype=F64)
    logp = torch.log(torch.tensor([0.3, 0.01, 1e-5, 0.4], dtype=F64))
    y = S.gamma_log_icdf(logp, a)
    expected = (logp + torch.lgamma(a + 1)) / a
    assert torch.allclose(y, expected, rtol=1e-12, atol=0)  # x ≤ e^{-90}, so the O(x) term is nil


def test_gamma_log_cdf_matches_scipy():
    a, u = grid(np.geomspace(1e-3, 1e4, 15), np.linspace(0.02, 0.98, 9))
    x = torch.tensor(sc.gammaincinv(a.numpy(), u.numpy()), dtype=F64)
    x = x.clamp(min=1e-300)
    log_p, log_q = S.gamma_log_cdf(torch.log(x), a)
    ref_p = np.log(sc.gammainc(a.numpy(), x.numpy()))
    ref_q = np.log(sc.gammaincc(a.numpy(), x.numpy()))
    assert np.allclose(log_p.numpy(), ref_p, rtol=0, atol=5e-9)
    assert np.allclose(log_q.numpy(), ref_q, rtol=0, atol=5e-9)


@pytest.mark.parametrize("shape", [1e-3, 0.3, 1.0, 7.5, 240.0, 1.6e4])
def test_normal_gamma_maps_are_inverse(shape):
    xi = torch.linspace(-30, 30, 601, dtype=F64)
    a = torch.full_like(xi, shape)
    y = S.gamma_log_icdf_normal(xi, a)
    assert torch.isfinite(y).all()
    assert (torch.diff(y) > 0).all()                 # monotone in ξ
    back = S.normal_from_gamma_log(y, a)
    assert torch.allclose(back, xi, rtol=0, atol=1e-9), (back - xi).abs().max()


def test_normal_map_clamps_underflowing_cdf():
    a = torch.tensor([2.0, 2.0], dtype=F64)
    y = torch.tensor([-1e4, 1e3], dtype=F64)          # P and Q underflow respectively
    z = S.normal_from_gamma_log(y, a)
    assert torch.equal(z, torch.tensor([-S.Z_MAX, S.Z_MAX], dtype=F64))


def test_maps_are_differentiable_in_their_input():
    a = torch.tensor([0.05, 0.9, 3.0, 500.0], dtype=F64)
    xi = torch.tensor([-1.3, 0.2, 2.1, -0.4], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: S.gamma_log_icdf_normal(v, a), (xi,))
    y = S.gamma_log_icdf_normal(xi, a).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: S.normal_from_gamma_log(v, a), (y,))
    with pytest.raises(NotImplementedError):
        a_req = a.clone().requires_grad_(True)
        S.gamma_log_icdf_normal(xi, a_req).sum().backward()


def test_normal_helpers():
    z = torch.tensor([-37.0, -20.0, -8.0, -1.0, 0.0, 2.0, 9.0], dtype=F64)
    assert np.allclose(S.ndtr(z).numpy(), sc.ndtr(z.numpy()), rtol=1e-13, atol=0)
    logp = torch.tensor([-1e5, -2e3, -700.0, -50.0, -3.0, -0.7, -0.1, -1e-10, -1e-300], dtype=F64)
    z = S.ndtri_log(logp)
    assert torch.allclose(S.log_ndtr(z), logp, rtol=1e-12, atol=0)
    ref = sc.ndtri(np.exp(logp.numpy()[3:7]))
    assert np.allclose(z.numpy()[3:7], ref, rtol=1e-13)
    assert torch.isinf(S.ndtri_log(torch.tensor([-np.inf, 0.0], dtype=F64))).all()


def test_log1mexp():
    x = torch.tensor([-1e-20, -1e-5, -0.5, -1.0, -40.0, -800.0], dtype=F64)
    ref = np.log(-np.expm1(x.numpy()))
    assert np.allclose(S.log1mexp(x).numpy(), ref, rtol=1e-14)


def test_lgamma_bregman():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    a = torch.tensor([1.0, 1.0, 3.7, 3.7, 250.0, 250.0, 1e4, 1e4, 0.01], dtype=F64)
    b = a * torch.tensor([1 + 1e-9, 1.5, 1 - 5e-4, 1 + 2e-3, 1 + 1e-7, 0.3, 1 + 1e-6, 1 + 1e-2, 1.0 + 1e-5], dtype=F64)
    got = S.lgamma_bregman(b, a)
    for gi, ai, bi in zip(got.tolist(), a.tolist(), b.tolist()):
        A, B = mpmath.mpf(ai), mpmath.mpf(bi)
        ref = mpmath.loggamma(B) - mpmath.loggamma(A) - (B - A) * mpmath.digamma(A)
        assert gi == pytest.approx(float(ref), rel=1e-8, abs=1e-300), (ai, bi)
    assert (S.lgamma_bregman(a, a) == 0).all()


@pytest.mark.parametrize("shape_range", [(1e-6, 1e-4), (1e-4, 1.0), (1.0, 2.0), (1.0, 50.0), (50.0, 3e4)])
def test_early_exit_equals_all_iterations(shape_range, monkeypatch):
    """On the CPU the inverse CDF stops once its Halley steps are below ICDF_STEP_TOL; the result
    must equal (to float64 resolution) the one after every ICDF_ITERS iterations."""
    g = torch.Generator().manual_seed(3)
    lo, hi = shape_range
    a = torch.exp(torch.empty(20000, dtype=torch.float64).uniform_(np.log(lo), np.log(hi), generator=g))
    xi = 2.5 * torch.randn(20000, dtype=torch.float64, generator=g)
    early = S.gamma_log_icdf(S.log_ndtr(-xi.abs()), a, upper=xi > 0)
    monkeypatch.setattr(S, "ICDF_CHECK_AFTER", S.ICDF_ITERS)  # never checks: all iterations
    full = S.gamma_log_icdf(S.log_ndtr(-xi.abs()), a, upper=xi > 0)
    assert torch.allclose(early, full, rtol=1e-12, atol=1e-12)


def test_shapes_of_at_least_one_stop_after_two_iterations(monkeypatch):
    """Beta's noise maps use shapes 1 + ν x0 ≥ 1: from the Wilson–Hilferty start one Halley
    iteration leaves < 2e-5, so the CPU stops after the second (the cost of a coupled roll-out)."""
    calls = []
    tail = S.gamma_log_tail
    monkeypatch.setattr(S, "gamma_log_tail", lambda *args: calls.append(1) or tail(*args))
    g = torch.Generator().manual_seed(5)
    a = torch.exp(torch.empty(20000, dtype=torch.float64).uniform_(0.0, np.log(1e4), generator=g))
    xi = torch.randn(20000, dtype=torch.float64, generator=g)  # the noise maps' standard normal noise
    S.gamma_log_icdf(S.log_ndtr(-xi.abs()), a, upper=xi > 0)
    assert len(calls) == 2
