"""Kernel Inception Distance: brute-force loops, the Gaussian closed form, unbiasedness, the
standard error against the Monte-Carlo spread, and the input checks."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from mstar_engine.metrics.kid import kernel_inception_distance


def brute_force_kid(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The U-statistic and its Hoeffding-projection standard error, with Python loops over pairs."""
    a, b = a.tolist(), b.tolist()
    m, n, d = len(a), len(b), len(a[0])

    def k(x, y):
        return (sum(p * q for p, q in zip(x, y)) / d + 1.0) ** 3

    kaa = [[k(a[i], a[j]) for j in range(m)] for i in range(m)]
    kbb = [[k(b[i], b[j]) for j in range(n)] for i in range(n)]
    kab = [[k(a[i], b[j]) for j in range(n)] for i in range(m)]
    within_a = sum(kaa[i][j] for i in range(m) for j in range(m) if i != j)
    within_b = sum(kbb[i][j] for i in range(n) for j in range(n) if i != j)
    cross = sum(kab[i][j] for i in range(m) for j in range(n))
    kid = within_a / (m * (m - 1)) + within_b / (n * (n - 1)) - 2.0 * cross / (m * n)
    g_a = [2.0 * sum(kaa[i][j] for j in range(m) if j != i) / (m - 1) - 2.0 * sum(kab[i]) / n for i in range(m)]
    g_b = [2.0 * sum(kbb[j][i] for i in range(n) if i != j) / (n - 1) - 2.0 * sum(kab[i][j] for i in range(m)) / m
           for j in range(n)]
    se = math.sqrt(statistics.variance(g_a) / m + statistics.variance(g_b) / n)
    return kid, se


@pytest.mark.parametrize("chunk", [1, 3, 4, 2048])
def test_matches_brute_force_loops(chunk):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 5))
    b = 1.5 * rng.standard_normal((9, 5)) + 0.7
    want_kid, want_se = brute_force_kid(a, b)
    kid, se = kernel_inception_distance(a, b, chunk=chunk)
    assert kid == pytest.approx(want_kid, rel=1e-12)
    assert se == pytest.approx(want_se, rel=1e-12)
    assert abs(want_kid) > 0.1 and want_se > 0.01  # not a degenerate comparison
    kid_ba, se_ba = kernel_inception_distance(b, a, chunk=chunk)  # the formula is symmetric in (a, b)
    assert kid_ba == pytest.approx(want_kid, rel=1e-12)
    assert se_ba == pytest.approx(want_se, rel=1e-12)


def _repeat(rng, sample_a, sample_b, reps: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.array([kernel_inception_distance(sample_a(rng), sample_b(rng)) for _ in range(reps)])
    return out[:, 0], out[:, 1]


def test_mean_matches_gaussian_closed_form():
    # x ~ N(0, Σ1), y ~ N(0, Σ2): E k(x, y) = E (u + 1)³ with u = x·y/d, E u = E u³ = 0 and
    # E u² = tr(Σ1 Σ2)/d², so E k = 1 + 3 tr(Σ1 Σ2)/d² and MMD² = 3/d² ‖Σ1 − Σ2‖²_F.
    d, reps = 4, 400
    var1, var2 = np.ones(d), np.array([2.0, 2.0, 0.5, 0.5])
    exact = 3.0 / d**2 * np.sum((var1 - var2) ** 2)  # 0.46875
    rng = np.random.default_rng(1)
    kids, _ = _repeat(rng, lambda r: r.standard_normal((50, d)) * np.sqrt(var1),
                      lambda r: r.standard_normal((60, d)) * np.sqrt(var2), reps)
    mc_se = kids.std(ddof=1) / math.sqrt(reps)
    assert mc_se < 0.05 * exact  # the check below has power (a V-statistic's bias is ~30 mc_se here)
    assert abs(kids.mean() - exact) < 4 * mc_se


def test_unbiased_for_identical_distributions():
    d, reps = 4, 400
    scale = np.sqrt([2.0, 2.0, 0.5, 0.5])
    rng = np.random.default_rng(2)
    kids, _ = _repeat(rng, lambda r: r.standard_normal((50, d)) * scale,
                      lambda r: r.standard_normal((60, d)) * scale, reps)
    mc_se = kids.std(ddof=1) / math.sqrt(reps)
    assert abs(kids.mean()) < 4 * mc_se
    assert (kids < 0).mean() > 0.3  # an unbiased estimate of 0 is often negative


def test_standard_error_matches_monte_carlo_spread():
    # 250 independent repetitions: the empirical std of kid is itself known to about ±5%; the first-
    # order se (non-degenerate case: the distributions differ) must agree with it within 15%.
    d, n, reps = 4, 200, 250
    rng = np.random.default_rng(3)
    kids, ses = _repeat(rng, lambda r: r.uniform(-1.0, 1.0, (n, d)),
                        lambda r: r.uniform(-1.0, 1.0, (n, d)) + 0.5, reps)
    ratio = kids.std(ddof=1) / ses.mean()
    assert 0.85 < ratio < 1.15, ratio
    assert ses.std() < 0.2 * ses.mean()  # the per-call se is stable, not just right on average


@pytest.mark.parametrize("a_shape, b_shape, match", [
    ((1, 3), (5, 3), "at least 2"),
    ((5, 3), (1, 3), "at least 2"),
    ((0, 3), (5, 3), "at least 2"),
    ((5, 3), (5, 4), "dimensions differ"),
    ((5,), (5, 3), "2-D"),
])
def test_rejects_bad_inputs(a_shape, b_shape, match):
    with pytest.raises(ValueError, match=match):
        kernel_inception_distance(np.ones(a_shape), np.ones(b_shape))


def test_rejects_non_positive_chunk():
    x = np.random.default_rng(4).standard_normal((4, 3))
    with pytest.raises(ValueError, match="chunk"):
        kernel_inception_distance(x, x, chunk=0)
