"""Closed-form published schedules (notes §3.3–§3.5) and the paper-only families (§3.7)."""
import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from mstar_engine.schedules import SCHEDULES

# notes tables, "code t" = paper t − 1
DIRICHLET = {0: 2000, 1: 1600, 8: 336, 16: 56.3, 32: 1.58, 48: 0.043, 63: 1e-6}
WISHART_N = {0: 20000, 1: 15390, 8: 2456, 16: 306, 32: 9.5, 48: 5.07, 62: 5.0, 63: 5}
WISHART_XI = {0: 1, 1: 0.992, 8: 0.934, 16: 0.864, 32: 0.70, 48: 0.49, 62: 0.126, 63: 1e-4}
VMF = {0: 1413, 1: 1000, 10: 79.2, 30: 5.01, 50: 2.53, 70: 1.00, 90: 0.031, 99: 0.0015}


def table_rel_error(values, table):
    """Largest relative error against a table rounded to its printed digits (≤ 1 % asked)."""
    return max(abs(values[code + 1] / ref - 1) for code, ref in table.items())


def test_dirichlet_table_within_1_percent():
    assert table_rel_error(SCHEDULES["dirichlet-exp"].build(64)["nu"].numpy(), DIRICHLET) < 0.01


def test_wishart_tables_within_1_percent():
    p = SCHEDULES["wishart-exp"].build(64)
    assert table_rel_error(p["df"].numpy(), WISHART_N) < 0.01
    assert table_rel_error(p["xi"].numpy(), WISHART_XI) < 0.01


def test_vmf_table_within_1_percent():
    assert table_rel_error(SCHEDULES["vmf-spline"].build(100)["kappa"].numpy(), VMF) < 0.01


def published_exponential_decay(high, low, ratio, n):
    """The published recursion: x = [1e-6], multiply by the ratio n − 1 times, flip, shift, rescale."""
    x = [1e-6]
    for _ in range(n - 1):
        x.append(x[-1] * ratio)
    x = np.array(x[::-1])
    x = x - x[-1]
    return x * (high - low) / x[0] + low


def test_exponential_decay_is_the_published_recursion_at_t_64():
    nu = SCHEDULES["dirichlet-exp"].build(64)["nu"].numpy()[1:]
    np.testing.assert_allclose(nu, published_exponential_decay(2000, 1e-6, 1.25, 64), rtol=1e-10)
    n = SCHEDULES["wishart-exp"].build(64)["df"].numpy()[1:]
    np.testing.assert_allclose(n, published_exponential_decay(20000, 5, 1.3, 64), rtol=1e-10)


@pytest.mark.parametrize("steps", [16, 256])
def test_other_step_counts_keep_the_curve_in_continuous_time(steps):
    """For T ≠ 64 the per-step ratio is 1.25^{63/(T−1)}: same endpoints, same value at τ = ½."""
    nu = SCHEDULES["dirichlet-exp"].build(steps)["nu"].numpy()[1:]
    assert nu[0] == pytest.approx(2000) and nu[-1] == pytest.approx(1e-6)
    r = 1.25 ** (63 / (steps - 1))
    np.testing.assert_allclose(nu, published_exponential_decay(2000, 1e-6, r, steps), rtol=1e-9)


def test_vmf_spline_passes_through_its_knots_and_follows_scipy():
    kappa = SCHEDULES["vmf-spline"].build(100)["kappa"].numpy()
    for tau, log_k in ((0.01, 3.0), (0.3, 0.7), (0.7, 0.0)):
        assert np.log10(kappa[round(tau * 100) + 1]) == pytest.approx(log_k, abs=1e-12)
    spline = CubicSpline([1.0, 30.0, 70.0, 100.0], [3.0, 0.7, 0.0, -3.0])  # the code's knots × T
    k400 = SCHEDULES["vmf-spline"].build(400)["kappa"].numpy()
    np.testing.assert_allclose(np.log10(k400[1:]), spline(100 * np.arange(400) / 400), atol=1e-12)


def test_pseudo_step_rules():
    assert SCHEDULES["dirichlet-exp"].build(64)["nu"][0] == SCHEDULES["dirichlet-exp"].build(64)["nu"][1]
    w = SCHEDULES["wishart-exp"].build(64)
    assert w["df"][0] == w["df"][1] and w["xi"][0] == w["xi"][1]
    k = SCHEDULES["vmf-spline"].build(100)["kappa"]
    assert k[0].item() == pytest.approx(1.1 * k[1].item())
    k = SCHEDULES["von-mises-exp"].build(50)["kappa"]
    assert k[0].item() == pytest.approx(1.1 * k[1].item())
    gm = SCHEDULES["gamma-exp"].build(50)
    assert gm["shape"][0] == gm["shape"][1] and gm["xi"][0] == gm["xi"][1]


def test_wishart_final_df_follows_the_matrix_size():
    assert SCHEDULES["wishart-exp"].build(64, event_shape=(2, 2))["df"][-1].item() == pytest.approx(5.0)
    assert SCHEDULES["wishart-exp"].build(64, event_shape=(6, 6))["df"][-1].item() == pytest.approx(9.0)


def test_gamma_and_von_mises_end_at_their_priors():
    gm = SCHEDULES["gamma-exp"].build(100)
    assert gm["xi"][1].item() == 0.0 and gm["shape"][1].item() == pytest.approx(1e4)
    assert gm["shape"][-1].item() == pytest.approx(1.0) and gm["xi"][-1].item() == pytest.approx(1 - 1e-4)
    k = SCHEDULES["von-mises-exp"].build(100)["kappa"]
    assert k[1].item() == pytest.approx(1000.0) and k[-1].item() == pytest.approx(1e-3)
