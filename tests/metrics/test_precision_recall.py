"""Improved precision and recall (k-NN manifolds): brute-force loops, a hand-computed 1-D example,
identical and separated sets, mode dropping and outliers, and the input checks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mstar_engine.metrics.precision_recall import precision_recall


def brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """The same definition with Python loops: sorted distances per point, then ball membership."""
    real, fake = real.tolist(), fake.tolist()

    def radii(points):
        return [sorted(math.dist(p, q) for j, q in enumerate(points) if j != i)[k - 1] for i, p in enumerate(points)]

    def share_inside(query, ref, ref_radii):
        return sum(any(math.dist(q, r) <= rad for r, rad in zip(ref, ref_radii)) for q in query) / len(query)

    return share_inside(fake, real, radii(real)), share_inside(real, fake, radii(fake))


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_matches_brute_force_loops(k, chunk):
    rng = np.random.default_rng(10 + k)
    real = rng.standard_normal((23, 3))
    fake = rng.standard_normal((17, 3))
    fake[:, 0] += 2.0  # overlapping but shifted, so that neither share is 0 or 1
    want = brute_force_precision_recall(real, fake, k)
    assert 0.0 < want[0] < 1.0 and 0.0 < want[1] < 1.0  # a non-trivial comparison
    assert precision_recall(real, fake, k=k, chunk=chunk) == want


@pytest.mark.parametrize("k, expected", [(1, (3 / 6, 4 / 6)), (2, (6 / 6, 4 / 6))])
def test_hand_computed_1d_example(k, expected):
    # real = 0, 1, 3, 7, 40, 41      fake = -2, 2, 6, 11, 13, 20
    # k = 1: real radii 1, 1, 2, 4, 1, 1 -> balls [-1,1] [0,2] [1,5] [3,11] [39,41] [40,42]
    #        fake radii 4, 4, 4, 2, 2, 7 -> balls [-6,2] [-2,6] [2,10] [9,13] [11,15] [13,27]
    #        precision: 2 (in [0,2] and [1,5]), 6 (in [3,11]), 11 (on the edge of [3,11]: ≤ counts)
    #        -> 3/6; recall: 0, 1, 3, 7 covered, 40 and 41 not -> 4/6.
    # k = 2: real radii 3, 2, 3, 6, 33, 34 -> balls [-3,3] [-1,3] [0,6] [1,13] [7,73] [7,75]
    #        fake radii 8, 4, 5, 5, 7, 9 -> balls [-10,6] [-2,6] [1,11] [6,16] [6,20] [11,29]
    #        precision: every fake point is in some real ball (13 on the edge of [1,13]) -> 6/6;
    #        recall: 0, 1, 3, 7 covered, 40 and 41 not -> 4/6.
    real = np.array([3.0, 40.0, 0.0, 7.0, 41.0, 1.0])[:, None]  # unsorted on purpose
    fake = np.array([13.0, -2.0, 20.0, 6.0, 2.0, 11.0])[:, None]
    assert precision_recall(real, fake, k=k, chunk=4) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("chunk", [3, 1024])
def test_identical_sets_give_one_one(chunk):
    x = np.random.default_rng(20).standard_normal((50, 8))
    assert precision_recall(x, x.copy(), chunk=chunk) == (1.0, 1.0)


def test_separated_clusters_give_zero_zero():
    rng = np.random.default_rng(21)
    real = rng.standard_normal((60, 4))
    fake = rng.standard_normal((40, 4)) + 100.0
    assert precision_recall(real, fake, chunk=16) == (0.0, 0.0)


def _two_blobs(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    shift = np.array([10.0, 0.0])
    return rng.standard_normal((n, 2)) - shift, rng.standard_normal((n, 2)) + shift


def test_mode_dropping_keeps_precision_and_halves_recall():
    rng = np.random.default_rng(22)
    left, right = _two_blobs(rng, 600)
    real = np.concatenate([left, right])
    fake = _two_blobs(rng, 1000)[0]  # every sample from the left mode only
    precision, recall = precision_recall(real, fake)
    assert precision >= 0.95
    assert abs(recall - 0.5) <= 0.1


def test_outliers_halve_precision_and_keep_recall():
    rng = np.random.default_rng(23)
    real = np.concatenate(_two_blobs(rng, 600))
    left, right = _two_blobs(rng, 300)
    outliers = rng.standard_normal((600, 2)) + 60.0  # as many far-off samples as good ones
    precision, recall = precision_recall(real, np.concatenate([left, right, outliers]))
    assert abs(precision - 0.5) <= 0.05
    assert recall >= 0.9


@pytest.mark.parametrize("real_shape, fake_shape, k, match", [
    ((3, 2), (10, 2), 3, "real needs more than k = 3"),
    ((10, 2), (3, 2), 3, "fake needs more than k = 3"),
    ((5, 2), (5, 2), 5, "needs more than k = 5"),
    ((10, 2), (10, 3), 3, "dimensions differ"),
    ((10,), (10, 2), 3, "2-D"),
    ((10, 2), (10, 2), 0, "k must be"),
])
def test_rejects_bad_inputs(real_shape, fake_shape, k, match):
    rng = np.random.default_rng(24)
    with pytest.raises(ValueError, match=match):
        precision_recall(rng.standard_normal(real_shape), rng.standard_normal(fake_shape), k=k)


def test_rejects_non_positive_chunk():
    x = np.random.default_rng(25).standard_normal((10, 2))
    with pytest.raises(ValueError, match="chunk"):
        precision_recall(x, x, chunk=0)
