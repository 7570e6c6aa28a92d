"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric
for Assessing Generative Models", NeurIPS).

Each set of feature vectors estimates its manifold as a union of balls: around every point, a ball
whose radius is the Euclidean distance to that point's k-th nearest *other* point of the same set
(the paper uses k = 3). Then

* precision = the share of fake points inside (≤) at least one real ball — fidelity: how many
  samples lie on the real manifold;
* recall = the share of real points inside (≤) at least one fake ball — coverage: how much of the
  real distribution the samples reach (dropped modes lower it).

Squared distances are ``‖x‖² + ‖y‖² − 2 x·y`` in float64, clamped at 0, computed in row chunks so
that memory stays O(chunk · max(m, n)).
"""
from __future__ import annotations

import numpy as np

__all__ = ["precision_recall"]


def _features(x, name: str, k: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) feature array, got shape {x.shape}")
    if x.shape[0] <= k:
        raise ValueError(f"{name} needs more than k = {k} points for k-NN radii, got {x.shape[0]}")
    return x


def _sq_dists(x: np.ndarray, x_sq: np.ndarray, y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of x and y, clamped at 0 (one block in memory)."""
    d2 = x @ y.T
    d2 *= -2.0
    d2 += x_sq[:, None]
    d2 += y_sq[None, :]
    return np.maximum(d2, 0.0, out=d2)


def _knn_sq_radii(x: np.ndarray, x_sq: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Squared distance from every row of x to its k-th nearest other row (itself excluded)."""
    n = x.shape[0]
    out = np.empty(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d2 = _sq_dists(x[start:stop], x_sq[start:stop], x, x_sq)
        rows = np.arange(stop - start)
        d2[rows, rows + start] = np.inf  # exclude the point itself
        out[start:stop] = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return out


def _coverage(query: np.ndarray, q_sq: np.ndarray, ref: np.ndarray, r_sq: np.ndarray,
              radii_sq: np.ndarray, chunk: int) -> float:
    """Fraction of query rows within (≤) the radius of at least one reference row."""
    inside = 0
    for start in range(0, query.shape[0], chunk):
        d2 = _sq_dists(query[start:start + chunk], q_sq[start:start + chunk], ref, r_sq)
        inside += int(np.count_nonzero((d2 <= radii_sq[None, :]).any(axis=1)))
    return inside / query.shape[0]


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall of ``fake`` against ``real`` (Kynkäänniemi et al. 2019).

    Returns ``(precision, recall)``: the share of fake points within the k-NN radius of some real
    point, and the share of real points within the k-NN radius of some fake point. Each set needs
    more than ``k`` points and the feature dimensions must agree.
    """
    if int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    k, chunk = int(k), int(chunk)
    real, fake = _features(real, "real", k), _features(fake, "fake", k)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: real has {real.shape[1]}, fake has {fake.shape[1]}")
    real_sq, fake_sq = np.einsum("ij,ij->i", real, real), np.einsum("ij,ij->i", fake, fake)
    real_radii = _knn_sq_radii(real, real_sq, k, chunk)
    fake_radii = _knn_sq_radii(fake, fake_sq, k, chunk)
    precision = _coverage(fake, fake_sq, real, real_sq, real_radii, chunk)
    recall = _coverage(real, real_sq, fake, fake_sq, fake_radii, chunk)
    return precision, recall
