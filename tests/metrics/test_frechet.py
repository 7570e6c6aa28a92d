"""Fréchet distance (FID formula) without scipy.linalg.sqrtm."""
import numpy as np
import pytest
import scipy.linalg
import torch

from mstar_engine.metrics.frechet import activation_statistics, frechet_distance, psd_sqrt


def random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def sqrtm_reference(mu1, s1, mu2, s2):
    """pytorch-fid's formula with scipy.linalg.sqrtm, computed here for comparison only."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_identical_gaussians_give_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.standard_normal(6), random_spd(rng, 6)
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-10)


def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    ref = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(ref, rel=1e-12)


def test_random_spd_pair_matches_sqrtm_formula():
    rng = np.random.default_rng(2)
    d = 8
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    ref = sqrtm_reference(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    # symmetric in its two Gaussians; torch inputs work
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ref, rel=1e-9)
    got = frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), torch.from_numpy(mu2), torch.from_numpy(s2))
    assert got == pytest.approx(ref, rel=1e-9)


def test_singular_covariance_is_fine():
    rng = np.random.default_rng(4)
    v = rng.standard_normal((6, 2))
    s1 = v @ v.T  # rank 2
    s2 = random_spd(rng, 6)
    mu = np.zeros(6)
    val = frechet_distance(mu, s1, mu, s2)
    assert np.isfinite(val) and val >= -1e-6
    # sqrt of rounding-level eigenvalues (~1e-16) leaves ~1e-8 residue, as with sqrtm
    assert frechet_distance(mu, s1, mu, s1) == pytest.approx(0.0, abs=1e-6)


def test_invariant_to_common_rotation():
    rng = np.random.default_rng(3)
    d = 7
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    base = frechet_distance(mu1, s1, mu2, s2)
    rot = frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
    assert rot == pytest.approx(base, rel=1e-10)


def test_activation_statistics_and_psd_sqrt():
    rng = np.random.default_rng(5)
    acts = rng.standard_normal((50, 4)) @ rng.standard_normal((4, 4))
    mu, sigma = activation_statistics(torch.from_numpy(acts).float())
    assert mu.dtype == np.float64 and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, acts.astype(np.float32).astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(acts.astype(np.float32).astype(np.float64), rowvar=False),
                               rtol=1e-10, atol=1e-12)
    r = psd_sqrt(sigma)
    np.testing.assert_allclose(r @ r, sigma, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError):
        activation_statistics(np.zeros((1, 4)))
