"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", ICLR).

KID is the squared maximum mean discrepancy between two sets of Inception pool3 features
``a`` (m × d) and ``b`` (n × d) under the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³``,
estimated by the unbiased U-statistic over the full sets::

    MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(a_i, a_j) + 1/(n(n−1)) Σ_{i≠j} k(b_i, b_j) − 2/(mn) Σ_{i,j} k(a_i, b_j).

clean-fid and torch-fidelity average this same estimator over random subsets of 1000 points; each
subset estimate is unbiased, so the full-set U-statistic has the same expectation, with a lower
variance (it uses every pair).

Standard error: from the first-order (Hoeffding) projections of the two-sample U-statistic,

    g_a(i) = 2 · mean_{j≠i} k(a_i, a_j) − 2 · mean_j k(a_i, b_j)
    g_b(j) = 2 · mean_{i≠j} k(b_j, b_i) − 2 · mean_i k(a_i, b_j)
    se     = sqrt(var(g_a, ddof=1) / m + var(g_b, ddof=1) / n).

This is the leading term of the estimator's variance; when both sets come from the same
distribution the projections are degenerate and the se is only a rough (order 1/n) scale.

All sums are float64 and computed in row chunks, so memory stays O(chunk · max(m, n)).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["kernel_inception_distance"]


def _features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) feature array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"KID needs at least 2 feature vectors in {name}, got {x.shape[0]}")
    return x


def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The cubic polynomial kernel block (x·y / d + 1)³, computed in place (one block in memory)."""
    block = x @ y.T
    block /= x.shape[1]
    block += 1.0
    block **= 3
    return block


def _within_row_sums(x: np.ndarray, chunk: int) -> np.ndarray:
    """Σ_{j≠i} k(x_i, x_j) for every row i, from (chunk × n) kernel blocks."""
    n = x.shape[0]
    out = np.empty(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = _kernel(x[start:stop], x)
        rows = np.arange(stop - start)
        block[rows, rows + start] = 0.0  # drop the diagonal k(x_i, x_i)
        out[start:stop] = block.sum(axis=1)
    return out


def _cross_sums(a: np.ndarray, b: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Row sums Σ_j k(a_i, b_j) (length m) and column sums Σ_i k(a_i, b_j) (length n)."""
    rows, cols = np.empty(a.shape[0]), np.zeros(b.shape[0])
    for start in range(0, a.shape[0], chunk):
        block = _kernel(a[start:start + chunk], b)
        rows[start:start + chunk] = block.sum(axis=1)
        cols += block.sum(axis=0)
    return rows, cols


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, *, chunk: int = 2048) -> tuple[float, float]:
    """Unbiased MMD² (cubic polynomial kernel) between feature sets ``a`` and ``b``, and its standard error.

    Returns ``(kid, se)``: the full-set U-statistic of Bińkowski et al. (2018) and the standard error
    from its first-order Hoeffding projections (see the module docstring). ``len(a)`` and ``len(b)``
    may differ but must each be ≥ 2; the feature dimensions must agree. ``chunk`` rows of kernel
    values are held at a time.
    """
    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: a has {a.shape[1]}, b has {b.shape[1]}")
    if int(chunk) < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk}")
    chunk = int(chunk)
    m, n = a.shape[0], b.shape[0]
    s_aa = _within_row_sums(a, chunk)
    s_bb = _within_row_sums(b, chunk)
    s_ab, s_ba = _cross_sums(a, b, chunk)
    kid = s_aa.sum() / (m * (m - 1)) + s_bb.sum() / (n * (n - 1)) - 2.0 * s_ab.sum() / (m * n)
    g_a = 2.0 * s_aa / (m - 1) - 2.0 * s_ab / n
    g_b = 2.0 * s_bb / (n - 1) - 2.0 * s_ba / m
    se = math.sqrt(g_a.var(ddof=1) / m + g_b.var(ddof=1) / n)
    return float(kid), se
