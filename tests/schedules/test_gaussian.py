"""Gaussian schedules: DDPM linear/cosine, Theorem 2 and the published §3.1 table."""
import math

import numpy as np
import pytest

from mstar_engine.schedules import SCHEDULES, gaussian_equivalent_snr
from mstar_engine.schedules import gaussian as g

# notes §3.1, N = 1000: paper t -> (ᾱ^SS_t, ᾱ^D_t)
TABLE_31 = {1: (0.9999, 0.99996), 11: (0.9938, 0.9993), 101: (0.388, 0.972),
            501: (6.0e-3, 0.493), 901: (5.0e-4, 0.024), 1000: (2.4e-6, 2.4e-6)}


def alpha_bar(params):
    return (params["mean"] ** 2).numpy()


@pytest.mark.parametrize("t", sorted(TABLE_31))
def test_table_31_star_shaped_row_within_1_percent(t):
    abar = alpha_bar(SCHEDULES["ss-cosine"].build(1000))
    assert abar[t] == pytest.approx(TABLE_31[t][0], rel=0.01)


@pytest.mark.parametrize("t", sorted(TABLE_31))
def test_table_31_ddpm_row_within_1_percent(t):
    abar = alpha_bar(SCHEDULES["cosine"].build(1000))
    assert abar[t] == pytest.approx(TABLE_31[t][1], rel=0.01)


def cosine_oracle(steps, t, plus_one=True):
    """ᾱ_t written out with math.cos, one value at a time."""
    d = steps + 1 if plus_one else steps
    f = lambda u: math.cos((u / d + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return f(t) / f(0)


@pytest.mark.parametrize("steps", [8, 1000])
def test_cosine_matches_the_formula(steps):
    p = SCHEDULES["cosine"].build(steps)
    for t in (1, steps // 2, steps):
        assert p["mean"][t].item() ** 2 == pytest.approx(cosine_oracle(steps, t), rel=1e-12)
        assert p["var"][t].item() == pytest.approx(1 - cosine_oracle(steps, t), rel=1e-9)


def test_cosine_without_plus_one_is_nichol_dhariwal_with_clipping():
    p = SCHEDULES["cosine"].build(100, plus_one=False)
    abar = alpha_bar(p)
    assert abar[50] == pytest.approx(cosine_oracle(100, 50, plus_one=False), rel=1e-12)
    assert abar[100] == pytest.approx(abar[99] * 0.001, rel=1e-9)  # β_T clipped to 0.999


def test_linear_betas_are_the_ddpm_ones():
    abar = alpha_bar(SCHEDULES["linear"].build(1000))
    beta = 1 - abar[1:] / np.concatenate([[1.0], abar[1:-1]])
    assert beta[0] == pytest.approx(1e-4, rel=1e-9) and beta[-1] == pytest.approx(0.02, rel=1e-9)
    assert np.allclose(np.diff(beta), (0.02 - 1e-4) / 999, rtol=1e-6)
    abar50 = alpha_bar(SCHEDULES["linear"].build(50))  # scaled by 1000/T
    assert 1 - abar50[1] == pytest.approx(2e-3, rel=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_pseudo_step_halves_the_noise(name):
    p = SCHEDULES[name].build(64)
    assert p["mean"][0].item() ** 2 == pytest.approx((1 + p["mean"][1].item() ** 2) / 2, rel=1e-12)
    assert p["var"][0].item() == pytest.approx(p["var"][1].item() / 2, rel=1e-12)


@pytest.mark.parametrize("base", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [1, 8, 64, 1000])
def test_theorem_2_tail_sums_of_star_shaped_snr_are_ddpm_snr(base, steps):
    """Σ_{s≥t} SNR^SS_s = SNR^D_t for every t = 0..T, to rounding."""
    snr_d = gaussian_equivalent_snr(base, steps).numpy()
    ss = SCHEDULES["ss-" + base].build(steps)
    snr_ss = (ss["mean"] ** 2 / ss["var"]).numpy()
    tail = np.cumsum(snr_ss[::-1])[::-1]
    np.testing.assert_allclose(tail, snr_d, rtol=1e-9)
    assert snr_ss[-1] == pytest.approx(snr_d[-1], rel=1e-12)  # SNR_{T+1} := 0


def test_theorem_2_gives_the_ddpm_law_of_the_tail_statistic():
    """G_t = (1 − ᾱ^D_t)/sqrt(ᾱ^D_t) Σ_{s≥t} m_s x_s / v_s has mean sqrt(ᾱ^D_t) x0 and variance
    1 − ᾱ^D_t: the moments of the independent Gaussian sum, from the built arrays."""
    ss, d = SCHEDULES["ss-cosine"].build(64), SCHEDULES["cosine"].build(64)
    m, v = ss["mean"].numpy(), ss["var"].numpy()
    abar_d = (d["mean"] ** 2).numpy()
    for t in (0, 1, 10, 64):
        scale = (1 - abar_d[t]) / np.sqrt(abar_d[t])
        mean = scale * np.sum(m[t:] ** 2 / v[t:])
        var = scale ** 2 * np.sum(m[t:] ** 2 / v[t:] ** 2 * v[t:])
        assert mean == pytest.approx(np.sqrt(abar_d[t]), rel=1e-9)
        assert var == pytest.approx(1 - abar_d[t], rel=1e-9)


def test_star_shaped_mean_and_var_are_exact_near_one():
    ss = SCHEDULES["ss-cosine"].build(1000)
    snr = g.gaussian_snr("ss-cosine", 1000)
    np.testing.assert_allclose((ss["mean"] ** 2 / ss["var"]).numpy(), snr, rtol=1e-12)
    np.testing.assert_allclose((ss["mean"] ** 2 + ss["var"]).numpy(), 1.0, rtol=1e-14)


def test_ss_linear_last_step_holds_the_residual_snr():
    """Documented exception to 'information decreases in t': SNR^SS_T = SNR^D_T exceeds the last
    increment SNR^D_{T−1} − SNR^D_T of the linear schedule (ᾱ changes by only 2 % at the end)."""
    snr = gaussian_equivalent_snr("ss-linear", 1000).numpy()
    assert np.all(np.diff(snr[:-1]) < 0)
    assert snr[-1] > snr[-2]


def test_bad_steps_are_rejected():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="steps"):
            SCHEDULES["cosine"].build(bad)
