"""Oracles for the flow-matching maths (:mod:`mstar_engine.kinds.flow_paths`): the straight path,
the time laws against scipy, the exact call counts of the ODE samplers, the Gaussian optimal
velocity against quadrature / Monte Carlo / least squares, network-free sampling against the
closed-form flow map, and the reflow (rectification) identities of Liu et al. 2023.

Every Monte Carlo tolerance is a stated multiple of a standard error (fixed seeds make the runs
deterministic, the multiple keeps the check honest for any seed)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from mstar_engine.kinds.flow_paths import (SOLVERS, draw_times, gaussian_ode_map, gaussian_velocity,
                                           interpolate, ode_sample, solver_steps, straightness, transport_cost,
                                           velocity_target)

F64 = torch.float64
MU = torch.tensor([0.7, -1.2], dtype=F64)
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=F64)  # eigenvalues ≈ 1.40 and 0.10: non-diagonal, anisotropic
N = 20_000


def _noise(n=N, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _exact_map(x1):
    a, b = gaussian_ode_map(MU, SIGMA)
    return x1 @ a.T + b


# ---------------------------------------------------------------- path


def test_interpolate_endpoints_shapes_and_derivative():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, 5, 6, generator=g, dtype=F64)
    eps = torch.randn(4, 3, 5, 6, generator=g, dtype=F64)
    assert torch.equal(interpolate(x0, eps, torch.zeros(4, dtype=F64)), x0)
    assert torch.equal(interpolate(x0, eps, torch.ones(4, dtype=F64)), eps)
    t = torch.tensor([0.0, 0.25, 0.5, 0.9], dtype=F64)
    xt = interpolate(x0, eps, t)
    assert xt.shape == x0.shape
    # per-example time: example 2 sits at the midpoint, its neighbours do not
    torch.testing.assert_close(xt[2], 0.5 * (x0[2] + eps[2]), rtol=0, atol=1e-15)
    # central difference of a linear function of t is exact up to rounding: 1e-9 covers h = 1e-4 in float64
    h = 1e-4
    fd = (interpolate(x0, eps, t.clamp(h, 1 - h) + h) - interpolate(x0, eps, t.clamp(h, 1 - h) - h)) / (2 * h)
    torch.testing.assert_close(fd, velocity_target(x0, eps), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        interpolate(x0, eps, torch.zeros(3, dtype=F64))


# ---------------------------------------------------------------- time laws


def test_uniform_times_moments_and_ks():
    n = 100_000
    t = draw_times(n, "uniform", torch.Generator().manual_seed(2)).numpy()
    assert t.min() >= 0 and t.max() < 1
    # 5 standard errors: SE(mean) = sqrt(1/12 / n); SE(var) = sqrt((μ4 − σ⁴)/n), μ4 − σ⁴ = 1/80 − 1/144 = 1/180
    assert abs(t.mean() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert abs(t.var() - 1 / 12) < 5 * math.sqrt(1 / 180 / n)
    assert stats.kstest(t, "uniform").pvalue > 1e-3


def test_logit_normal_times_match_scipy():
    n, mean, std = 100_000, 0.3, 1.2
    t = draw_times(n, "logit-normal", torch.Generator().manual_seed(3), mean=mean, std=std)
    assert t.dtype == F64 and t.shape == (n,)
    logit = torch.logit(t).numpy()
    assert stats.kstest(logit, stats.norm(mean, std).cdf).pvalue > 1e-3
    # the same KS test has the power to tell a wrong std or mean apart
    assert stats.kstest(logit, stats.norm(mean, 1.0).cdf).pvalue < 1e-6
    assert stats.kstest(logit, stats.norm(0.0, std).cdf).pvalue < 1e-6
    # quantiles of t against sigmoid(norm.ppf(q)); 5 SE with SE = sqrt(q(1−q)/n) / density at the quantile
    q = np.array([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    z = stats.norm(mean, std).ppf(q)
    ref = 1 / (1 + np.exp(-z))
    density = stats.norm(mean, std).pdf(z) / (ref * (1 - ref))  # change of variables t = sigmoid(z)
    se = np.sqrt(q * (1 - q) / n) / density
    assert np.all(np.abs(np.quantile(t.numpy(), q) - ref) < 5 * se)


@pytest.mark.parametrize("schedule", ["uniform", "logit-normal"])
def test_draw_times_is_a_pure_function_of_the_generator(schedule):
    state = torch.get_rng_state()
    a = draw_times(64, schedule, torch.Generator().manual_seed(7), mean=-0.5, std=0.8)
    torch.manual_seed(123)  # the global RNG must not matter
    b = draw_times(64, schedule, torch.Generator().manual_seed(7), mean=-0.5, std=0.8)
    assert torch.equal(a, b)
    c = draw_times(64, schedule, torch.Generator().manual_seed(8), mean=-0.5, std=0.8)
    assert not torch.equal(a, c)
    torch.set_rng_state(state)


def test_unknown_time_schedule_names_the_allowed_values():
    with pytest.raises(ValueError, match="uniform.*logit-normal"):
        draw_times(4, "cosine")


# ---------------------------------------------------------------- solvers


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("evaluations", range(1, 10))
def test_exactly_evaluations_calls(solver, evaluations):
    calls, steps_seen = [], []

    def velocity(x, t):
        assert t.shape == (x.shape[0],) and t.dtype == x.dtype and t.device == x.device
        assert torch.all(t == t[0])
        calls.append(float(t[0]))
        return -x

    x1 = torch.ones(3, 2, dtype=F64)
    out = ode_sample(velocity, x1, evaluations, solver, callback=lambda x, t: steps_seen.append(t))
    steps = solver_steps(evaluations, solver)
    assert len(calls) == evaluations
    assert sum(1 if kind == "euler" else 2 for _, _, kind in steps) == evaluations
    # a uniform grid from 1 to 0, with the callback once per step at its end time
    grid = [steps[0][0]] + [s[1] for s in steps]
    assert grid[0] == 1.0 and grid[-1] == 0.0
    np.testing.assert_allclose(np.diff(grid), -1 / len(steps), rtol=0, atol=1e-15)
    assert steps_seen == grid[1:]
    # Heun: at most one Euler step, and it comes first (only for odd counts)
    kinds = [s[2] for s in steps]
    if solver == "euler":
        assert kinds == ["euler"] * evaluations
    else:
        assert kinds == ["euler"] * (evaluations % 2) + ["heun"] * (evaluations // 2)
        expected_calls = []
        for t_from, t_to, kind in steps:
            expected_calls += [t_from] if kind == "euler" else [t_from, t_to]
        assert calls == expected_calls
    assert out.shape == x1.shape and out.dtype == F64


def test_solver_argument_errors():
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="evaluations"):
            solver_steps(bad, "euler")
        with pytest.raises(ValueError, match="evaluations"):
            ode_sample(lambda x, t: x, torch.zeros(2, 1, dtype=F64), bad, "heun")
    with pytest.raises(ValueError, match="euler, heun"):
        ode_sample(lambda x, t: x, torch.zeros(2, 1, dtype=F64), 4, "rk4")


# ---------------------------------------------------------------- Gaussian optimal velocity


@pytest.mark.parametrize("x,t", [(0.4, 0.05), (-1.3, 0.3), (2.0, 0.5), (0.1, 0.8), (-0.7, 0.97)])
def test_gaussian_velocity_1d_against_quadrature_and_monte_carlo(x, t):
    """v*(x, t) = E[ε − x0 | x_t = x] for x0 ~ N(m, s²), ε ~ N(0, 1) independent, by the posterior
    of x0 given x_t = x: weight ∝ N(x0; m, s²) · N(ε(x0); 0, 1) with ε(x0) = (x − (1 − t) x0) / t."""
    m, s = 0.6, 1.7
    got = float(gaussian_velocity([m], [[s * s]])(torch.tensor([[x]], dtype=F64), torch.tensor([t], dtype=F64)))

    def target_and_likelihood(x0):
        eps = (x - (1 - t) * x0) / t
        return eps - x0, stats.norm.pdf(eps)

    # deterministic quadrature on a grid resolving the posterior (width ≳ t/(1 − t)); 1e-8 is far
    # above the trapezoid error of a Gaussian integrand at this spacing
    grid = np.linspace(m - 14 * s, m + 14 * s, 400_001)
    u, like = target_and_likelihood(grid)
    w = like * stats.norm(m, s).pdf(grid)
    assert abs(got - np.trapezoid(u * w, grid) / np.trapezoid(w, grid)) < 1e-8
    # brute-force Monte Carlo: x0 drawn from its prior, weighted by the likelihood of x_t = x
    # (self-normalised importance sampling); 6 standard errors, SE² = Σ w²(u − v̂)² / (Σ w)²
    x0 = np.random.default_rng(4).normal(m, s, 400_000)
    u, w = target_and_likelihood(x0)
    mc = np.sum(w * u) / np.sum(w)
    se = math.sqrt(np.sum(w ** 2 * (u - mc) ** 2)) / np.sum(w)
    assert abs(got - mc) < 6 * se


def test_gaussian_velocity_endpoints_with_and_without_coupling():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 2, generator=g, dtype=F64)
    cross = torch.tensor([[0.3, -0.2], [0.1, 0.25]], dtype=F64)  # Cov(x0, ε); joint cov stays PD
    zeros, ones = torch.zeros(7, dtype=F64), torch.ones(7, dtype=F64)
    for c in (None, cross):
        cc = torch.zeros(2, 2, dtype=F64) if c is None else c
        v = gaussian_velocity(MU, SIGMA, c)
        # t = 1: x_t = ε, so v = x − E[x0 | ε = x] = x − μ − C x
        torch.testing.assert_close(v(x, ones), x - MU - x @ cc.T, rtol=0, atol=1e-12)
        # t = 0: x_t = x0, so v = E[ε | x0 = x] − x = Cᵀ Σ⁻¹ (x − μ) − x
        ref0 = torch.linalg.solve(SIGMA, (x - MU).T).T @ cc - x
        torch.testing.assert_close(v(x, zeros), ref0, rtol=0, atol=1e-12)
    # per-example times are honoured: a mixed batch equals the rows computed one time at a time
    t = torch.tensor([0.0, 1.0, 0.3, 0.3, 0.7, 0.0, 0.5], dtype=F64)
    v = gaussian_velocity(MU, SIGMA, cross)
    rows = torch.cat([v(x[i:i + 1], t[i:i + 1]) for i in range(7)])
    torch.testing.assert_close(v(x, t), rows, rtol=0, atol=1e-14)


def test_gaussian_velocity_with_coupling_is_the_least_squares_regression():
    """x0 = μ + M ε + L z (z independent) gives Σ = MMᵀ + LLᵀ and Cov(x0, ε) = M. v* is affine
    in x_t, so at fixed t it equals the least-squares regression of ε − x0 on (x_t, 1)."""
    n = 200_000
    g = torch.Generator().manual_seed(6)
    mm = torch.tensor([[0.5, 0.3], [-0.2, 0.4]], dtype=F64)
    ll = torch.tensor([[0.6, 0.0], [0.3, 0.5]], dtype=F64)
    eps, z = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)
    x0 = MU + eps @ mm.T + z @ ll.T
    v = gaussian_velocity(MU, mm @ mm.T + ll @ ll.T, mm)
    for t in (0.2, 0.6):
        tt = torch.full((n,), t, dtype=F64)
        xt = interpolate(x0, eps, tt)
        design = torch.cat([xt, torch.ones(n, 1, dtype=F64)], 1)
        coef = torch.linalg.lstsq(design, velocity_target(x0, eps)).solution
        probe = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.5, -2.0]], dtype=F64)
        fitted = torch.cat([probe, torch.ones(4, 1, dtype=F64)], 1) @ coef
        # coefficient SE ≈ residual sd / sqrt(n) ≈ 1/450 per unit of |probe|; 0.02 is > 5 SE at |probe| = 2.5
        torch.testing.assert_close(v(probe, torch.full((4,), t, dtype=F64)), fitted, rtol=0, atol=0.02)


# ---------------------------------------------------------------- network-free sampling


def test_exact_ode_map_is_the_square_root_and_the_limit_of_many_heun_steps():
    a, b = gaussian_ode_map(MU, SIGMA)
    torch.testing.assert_close(a, a.T, rtol=0, atol=1e-14)
    torch.testing.assert_close(a @ a, SIGMA, rtol=0, atol=1e-13)
    assert torch.linalg.eigvalsh(a).min() > 0
    torch.testing.assert_close(b, MU, rtol=0, atol=0)
    # the ODE is affine in x, so is its numerical flow map: read A_h, b_h off the images of 0, e1, e2.
    # Heun's global error is O(h²): measured ≈ 1.5 h² per unit noise, i.e. ≈ 6e-6 at 256 steps; 2e-5 bounds it
    probes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=F64)
    out = ode_sample(gaussian_velocity(MU, SIGMA), probes, 512, "heun")
    b_h, a_h = out[0], (out[1:] - out[0]).T
    assert (a_h - a).abs().max() < 2e-5 and (b_h - b).abs().max() < 2e-5
    # and not by accident: the same read-off after 8 Heun calls is visibly off
    coarse = ode_sample(gaussian_velocity(MU, SIGMA), probes, 8, "heun")
    assert ((coarse[1:] - coarse[0]).T - a).abs().max() > 1e-3


@pytest.mark.parametrize("solver,evaluations", [("heun", 64), ("euler", 256)])
def test_ode_sampling_reproduces_the_gaussian(solver, evaluations):
    x1 = _noise()
    out = ode_sample(gaussian_velocity(MU, SIGMA), x1, evaluations, solver)
    # statistics: 5 SE of the sample mean (sqrt(Σ_ii / N)) and covariance (sqrt((Σ_ii Σ_jj + Σ_ij²) / N)),
    # plus 0.01 for the discretisation (RMSE to the exact map measured ≈ 6.5e-3 for Euler at 256, 4e-4 Heun at 64)
    diag = torch.diagonal(SIGMA)
    assert torch.all((out.mean(0) - MU).abs() < 5 * torch.sqrt(diag / N) + 0.01)
    cov_se = torch.sqrt((torch.outer(diag, diag) + SIGMA ** 2) / N)
    assert torch.all((torch.cov(out.T) - SIGMA).abs() < 5 * cov_se + 0.01)
    # discretisation alone, against the exact map applied to the same noise: RMSE measured ≈ 1.65 / E (Euler)
    # and ≈ 1.5 / E² (Heun) with E calls; the bounds are 2.5× those
    rmse = float((out - _exact_map(x1)).pow(2).sum(1).mean().sqrt())
    assert rmse < (1e-3 if solver == "heun" else 0.016)


def test_heun_beats_euler_and_both_converge_at_their_order():
    x1 = _noise(4000)
    v, ref = gaussian_velocity(MU, SIGMA), _exact_map(x1)

    def mse(evaluations, solver):
        return float((ode_sample(v, x1, evaluations, solver) - ref).pow(2).sum(1).mean())

    # same budget of 8 calls: Heun's second order wins by a wide margin (measured ≈ 70×)
    assert mse(8, "heun") < mse(8, "euler") / 10
    # doubling the calls divides the RMSE by ≈ 2 (Euler, order 1) and ≈ 4 (Heun, order 2);
    # ±20 % allows the pre-asymptotic terms at 32 → 64 calls
    euler_ratio = math.sqrt(mse(32, "euler") / mse(64, "euler"))
    heun_ratio = math.sqrt(mse(32, "heun") / mse(64, "heun"))
    assert 1.6 < euler_ratio < 2.4
    assert 3.2 < heun_ratio < 4.8


# ---------------------------------------------------------------- reflow (Liu et al. rectification)


def _independent_straightness_closed_form(times=64):
    """E_t E Var(ε − x0 | x_t) = tr(Cov(u) − Cov(u, x_t) S_t⁻¹ Cov(x_t, u)), independent coupling,
    written out with numpy from scratch."""
    sigma, eye, total = SIGMA.numpy(), np.eye(2), 0.0
    for k in range(times):
        t = (k + 0.5) / times
        s_t = (1 - t) ** 2 * sigma + t ** 2 * eye
        c_ux = t * eye - (1 - t) * sigma
        total += np.trace(sigma + eye - c_ux @ np.linalg.solve(s_t, c_ux.T))
    return total / times


def test_reflow_lowers_transport_cost_and_straightens_the_coupling():
    g = torch.Generator().manual_seed(9)
    eps = torch.randn(N, 2, generator=g, dtype=F64)
    x0_ind = MU + torch.randn(N, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(SIGMA).T
    a, b = gaussian_ode_map(MU, SIGMA)
    x0_rect = eps @ a.T + b

    # transport cost, closed form: E‖x0 − ε‖² = tr Σ + ‖μ‖² + d (independent), ‖A − I‖²_F + ‖μ‖² (ODE coupling)
    d = 2
    closed_ind = float(torch.trace(SIGMA) + MU @ MU + d)
    closed_rect = float(torch.sum((a - torch.eye(2, dtype=F64)) ** 2) + MU @ MU)
    assert closed_rect < closed_ind - 1.0  # here tr Σ^{1/2} ≈ 1.50, so the saving 2 tr Σ^{1/2} ≈ 3.0
    for x0, closed in ((x0_ind, closed_ind), (x0_rect, closed_rect)):
        per = (x0 - eps).pow(2).sum(1)
        assert abs(float(transport_cost(x0, eps)) - closed) < 5 * float(per.std()) / math.sqrt(N)  # 5 SE
    assert float(transport_cost(x0_rect, eps)) < float(transport_cost(x0_ind, eps))

    # the rectified coupling's own optimal velocity (Cov(x0, ε) = A) moves every pair straight
    v_rect = gaussian_velocity(MU, SIGMA, cross=a)
    assert float(straightness(v_rect, x0_rect, eps)) < 1e-8
    # the independent coupling's optimal velocity cannot: its straightness is E Var(u | x_t) > 0
    v_ind = gaussian_velocity(MU, SIGMA)
    s_ind = float(straightness(v_ind, x0_ind, eps))
    closed = _independent_straightness_closed_form()
    assert closed > 0.5 and s_ind > 0.5
    # residuals are Gaussian with trace ≈ closed: per-example SE ≲ sqrt(2) · closed / sqrt(N); 5 SE
    assert abs(s_ind - closed) < 5 * math.sqrt(2) * closed / math.sqrt(N)

    # one Euler step of the rectified velocity from t = 1 lands on the coupling: v(ε, 1) = ε − (Aε + b)
    one_step = ode_sample(v_rect, eps, 1, "euler")
    assert (one_step - x0_rect).abs().max() < 1e-8
    # while one Euler step of the independent velocity lands on x1 − v(x1, 1) = μ: far from the coupling
    assert (ode_sample(v_ind, eps, 1, "euler") - x0_rect).abs().max() > 0.5
