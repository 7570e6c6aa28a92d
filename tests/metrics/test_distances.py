"""Sample-based distances: kNN KL, MMD², energy distance, noise floor."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from mstar_engine.metrics.catalog import METRICS
from mstar_engine.metrics.distances import (
    METRIC_FUNCTIONS,
    NoiseFloor,
    as_matrix,
    drop_last_coordinate_if_simplex,
    energy_distance,
    knn_kl,
    median_bandwidth,
    mmd2,
    nan_guard,
    noise_floor,
    symmetrised_knn_kl,
)


def gaussian_kl_diag(mu_p, s_p, mu_q, s_q):
    """KL(N(mu_p, diag s_p²) ‖ N(mu_q, diag s_q²))."""
    return float(0.5 * np.sum(s_p**2 / s_q**2 + (mu_q - mu_p) ** 2 / s_q**2 - 1 + 2 * np.log(s_q / s_p)))


MU_Q, S_Q = np.array([0.5, 0.0]), np.array([1.0, 1.5])


@pytest.fixture(scope="module")
def gauss_pair():
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((5000, 2))               # P = N(0, I)
    y = MU_Q + S_Q * rng.standard_normal((5000, 2))  # Q = N(mu, diag s²), wider than P
    return x, y


@pytest.mark.parametrize("p", [math.inf, 2.0])
def test_knn_kl_matches_closed_form(gauss_pair, p):
    # d = 2, n = m = 5000, k = 10. Tolerance 0.045 absolute: over 15-20 seeds the error of KL(P‖Q)
    # (Q wider than P) has mean ≈ -0.004 and std ≈ 0.015. (The reverse direction KL(Q‖P) is biased low
    # by ≈ 0.09 at this n — Q's tail points land where P has few samples — so it is not tested here.)
    x, y = gauss_pair
    true_pq = gaussian_kl_diag(np.zeros(2), np.ones(2), MU_Q, S_Q)  # 0.2527
    assert knn_kl(x, y, k=10, p=p) == pytest.approx(true_pq, abs=0.045)


@pytest.mark.parametrize("p", [math.inf, 2.0])
def test_knn_kl_mean_shift_both_directions(p):
    # N(0, I) vs N((0.5, 0), I): KL = 0.125 each way; over 15 seeds error ≈ -0.011 ± 0.012.
    rng = np.random.default_rng(99)
    x = rng.standard_normal((5000, 2))
    y = rng.standard_normal((5000, 2)) + np.array([0.5, 0.0])
    assert knn_kl(x, y, p=p) == pytest.approx(0.125, abs=0.045)
    assert knn_kl(y, x, p=p) == pytest.approx(0.125, abs=0.045)
    assert symmetrised_knn_kl(x, y, reduction="sum", p=p) == pytest.approx(0.25, abs=0.07)
    assert symmetrised_knn_kl(x, y, p=p) == pytest.approx(0.125, abs=0.045)  # default: average


def test_symmetrised_knn_kl_variants_and_symmetry(gauss_pair):
    x, y = gauss_pair
    one, two = knn_kl(x, y), knn_kl(y, x)
    mean = symmetrised_knn_kl(x, y)
    assert mean == pytest.approx((one + two) / 2, rel=1e-12)          # default: SS-DDPM average
    assert symmetrised_knn_kl(x, y, reduction="sum") == pytest.approx(one + two, rel=1e-12)
    assert symmetrised_knn_kl(y, x) == pytest.approx(mean, rel=1e-12)  # symmetric
    with pytest.raises(ValueError):
        symmetrised_knn_kl(x, y, reduction="max")


def test_knn_kl_near_zero_for_one_distribution():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((4000, 2)), rng.standard_normal((4000, 2))
    # std over seeds ≈ 0.006 for the symmetrised mean at this size
    assert abs(symmetrised_knn_kl(a, b)) < 0.025
    assert abs(knn_kl(a, b)) < 0.04


def test_knn_kl_against_brute_force_and_inputs():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((30, 3)) + 0.3
    k = 4
    for p, ordd in ((math.inf, np.inf), (2.0, 2)):
        dxx = np.linalg.norm(x[:, None] - x[None], ord=ordd, axis=-1)
        dxy = np.linalg.norm(x[:, None] - y[None], ord=ordd, axis=-1)
        rho = np.sort(dxx, axis=1)[:, k]      # column 0 is self
        nu = np.sort(dxy, axis=1)[:, k - 1]
        ref = 3 * np.mean(np.log(nu / rho)) + math.log(30 / 39)
        assert knn_kl(x, y, k=k, p=p) == pytest.approx(ref, rel=1e-12, abs=1e-12)
    # tensors of shape (n, ...) are flattened; float32 tensors give the same value as float64 arrays
    xt = torch.from_numpy(x).reshape(40, 3, 1)
    assert knn_kl(xt, torch.from_numpy(y), k=k) == pytest.approx(knn_kl(x, y, k=k), rel=1e-12)


def test_knn_kl_duplicates_are_finite_and_deterministic():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((50, 2))
    x = np.concatenate([base] * 12)  # every point repeated 12 times > k
    y = rng.standard_normal((300, 2))
    v = knn_kl(x, y, k=10)
    assert np.isfinite(v)
    assert v == knn_kl(x, y, k=10)
    assert np.isfinite(symmetrised_knn_kl(x, y, k=10))


def test_knn_kl_validates():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError):
        knn_kl(x, np.zeros((5, 3)))
    with pytest.raises(ValueError):
        knn_kl(x, np.zeros((20, 2)), k=5)  # k must be < n


def test_drop_last_coordinate_if_simplex():
    t = torch.rand(6, 1, 1, 4)
    assert drop_last_coordinate_if_simplex(t, True).shape == (6, 1, 1, 3)
    assert drop_last_coordinate_if_simplex(t, False) is t
    a = np.random.default_rng(0).dirichlet(np.ones(3), size=5)
    assert np.array_equal(drop_last_coordinate_if_simplex(a, True), a[:, :2])


def test_nan_guard():
    x = torch.ones(10, 2)
    x[0, 0] = float("nan")
    assert not torch.isnan(nan_guard(x)).any()
    x[:3] = float("nan")
    with pytest.raises(ValueError):
        nan_guard(x)


# ------------------------------------------------------------------------------------ MMD²
def mmd2_brute(a, b, sigma):
    def k(u, v):
        return math.exp(-float(np.sum((u - v) ** 2)) / (2 * sigma**2))
    n, m = len(a), len(b)
    sxx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    syy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return sxx + syy - 2 * sxy


def test_mmd2_matches_brute_force():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((17, 3)), rng.standard_normal((13, 3)) + 0.4
    assert mmd2(a, b, bandwidth=0.9) == pytest.approx(mmd2_brute(a, b, 0.9), rel=1e-12, abs=1e-14)
    z = np.concatenate([a, b])
    pair = [np.linalg.norm(z[i] - z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
    sigma = float(np.median(pair))
    assert median_bandwidth(a, b) == pytest.approx(sigma, rel=1e-12)
    assert mmd2(a, b) == pytest.approx(mmd2_brute(a, b, sigma), rel=1e-12, abs=1e-14)


def test_mmd2_blocked_equals_unblocked(monkeypatch):
    import mstar_engine.metrics.distances as dist
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((50, 2)), rng.standard_normal((40, 2))
    full = dist.mmd2(a, b, bandwidth=1.0)
    monkeypatch.setattr(dist, "_BLOCK", 7)
    assert dist.mmd2(a, b, bandwidth=1.0) == pytest.approx(full, rel=1e-12, abs=1e-15)


def test_mmd2_unbiased_mean_near_zero_and_detects_shift():
    rng = np.random.default_rng(11)
    vals = [mmd2(rng.standard_normal((100, 2)), rng.standard_normal((100, 2)), bandwidth=1.0) for _ in range(40)]
    vals = np.asarray(vals)
    # unbiased: the mean over repeats is 0 within its standard error, and some values are negative
    assert abs(vals.mean()) < 3 * vals.std(ddof=1) / math.sqrt(len(vals)) + 1e-4
    assert (vals < 0).any()
    shifted = mmd2(rng.standard_normal((100, 2)), rng.standard_normal((100, 2)) + 1.0, bandwidth=1.0)
    assert shifted > vals.max()


# ------------------------------------------------------------------------------------ energy
def test_energy_distance_1d_is_scipy_squared():
    rng = np.random.default_rng(8)
    u, v = rng.standard_normal(60), rng.standard_normal(45) * 1.3 + 0.2
    # scipy.stats.energy_distance returns sqrt(2E|X-Y| - E|X-X'| - E|Y-Y'|) with the V-statistic
    assert energy_distance(u, v) == pytest.approx(scipy.stats.energy_distance(u, v) ** 2, rel=1e-10)
    assert energy_distance(u[:, None], v[:, None]) == pytest.approx(energy_distance(u, v), rel=1e-14)


@pytest.mark.parametrize("unbiased", [False, True])
def test_energy_distance_brute_force_3d(unbiased):
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((15, 3)), rng.standard_normal((11, 3)) + 0.5
    n, m = len(a), len(b)
    sxy = sum(np.linalg.norm(a[i] - b[j]) for i in range(n) for j in range(m)) / (n * m)
    sxx = sum(np.linalg.norm(a[i] - a[j]) for i in range(n) for j in range(n))
    syy = sum(np.linalg.norm(b[i] - b[j]) for i in range(m) for j in range(m))
    if unbiased:
        ref = 2 * sxy - sxx / (n * (n - 1)) - syy / (m * (m - 1))
    else:
        ref = 2 * sxy - sxx / n**2 - syy / m**2
    assert energy_distance(a, b, unbiased=unbiased) == pytest.approx(ref, rel=1e-12)
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-14)


# ------------------------------------------------------------------------------------ noise floor
def test_noise_floor_deterministic_and_small():
    data = torch.randn(600, 2, generator=torch.Generator().manual_seed(0))
    nf = noise_floor(energy_distance, data, n=200, repeats=4, generator=torch.Generator().manual_seed(1))
    again = noise_floor("energy", data, n=200, repeats=4, generator=1)
    assert isinstance(nf, NoiseFloor) and len(nf.values) == 4
    assert nf.values == again.values
    assert 0 <= float(nf) < 0.05
    shifted = energy_distance(data[:200], data[200:400] + 1.0)
    assert shifted > 10 * nf.mean
    mf = noise_floor("mmd", data, n=100, repeats=2, generator=0, bandwidth=1.0)
    assert abs(mf.mean) < 0.05
    with pytest.raises(ValueError):
        noise_floor("energy", data, n=301, repeats=1)
    with pytest.raises(ValueError):
        noise_floor("fid", data, n=10, repeats=1)


def test_metric_functions_cover_vector_catalog_entries():
    vector = {name for name, info in METRICS.items() if info.data == "vector"}
    assert vector == set(METRIC_FUNCTIONS)


def test_as_matrix_shapes():
    assert as_matrix(np.arange(5.0)).shape == (5, 1)
    assert as_matrix(torch.zeros(4, 2, 3)).shape == (4, 6)
    assert as_matrix(torch.zeros(4, 2, dtype=torch.float32)).dtype == np.float64
