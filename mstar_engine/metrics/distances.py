"""Sample-based distances between two point clouds: kNN KL, MMD², energy distance, and a noise floor.

All functions take two ``(n, ...)`` tensors or arrays, flatten them to ``(n, d)``, work in float64
and return a Python ``float``. They are deterministic: no jitter, no random subsampling (the only
randomness lives in :func:`noise_floor`, which takes an explicit generator).

Metric variants (what the catalog names ``knn-kl``, ``mmd`` and ``energy`` mean):

* ``knn-kl``: :func:`symmetrised_knn_kl` — the SS-DDPM protocol (``NpeetKL_metric`` in
  ``lib/metrics_and_losses/SimpleMetrics.py``): NPEET ``kldiv`` in nats (``base=np.e``), k = 10,
  max-norm neighbours, **averaged** over the two directions, ``(KL(q‖p) + KL(p‖q)) / 2``. The SS-DDPM
  source averages (``npeet_symmetric_kl_estimation`` divides by 2), so the mean is the default;
  ``reduction="sum"`` gives the plain symmetrised sum (Jeffreys divergence), which is exactly twice it.
* ``mmd``: :func:`mmd2` — unbiased (U-statistic) MMD² with a Gaussian kernel, median-heuristic bandwidth.
* ``energy``: :func:`energy_distance` — the V-statistic energy distance ``2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖``
  (the squared form; in 1-D it equals ``scipy.stats.energy_distance(u, v) ** 2``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

__all__ = [
    "DISTANCE_FLOOR",
    "NoiseFloor",
    "METRIC_FUNCTIONS",
    "as_matrix",
    "drop_last_coordinate_if_simplex",
    "nan_guard",
    "knn_kl",
    "symmetrised_knn_kl",
    "median_bandwidth",
    "mmd2",
    "energy_distance",
    "noise_floor",
]

#: Neighbour distances are clamped below at this value before the logarithm, so duplicate points
#: (zero distances) give a large finite number instead of ``-inf``/``nan``. No jitter is added.
DISTANCE_FLOOR = 1e-300

#: Pooled samples larger than this use an evenly spaced deterministic subset for the median heuristic.
MEDIAN_MAX_POINTS = 2000

_BLOCK = 2048


# --------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------
def as_matrix(x) -> np.ndarray:
    """``(n, ...)`` tensor/array → contiguous float64 numpy array ``(n, d)`` (a 1-D input is ``(n, 1)``)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("expected samples of shape (n, ...), got a scalar")
    return np.ascontiguousarray(x.reshape(x.shape[0], -1))


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_matrix(a), as_matrix(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"samples have different dimensions: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("empty sample")
    return a, b


def drop_last_coordinate_if_simplex(x, is_simplex: bool):
    """Drop the last coordinate of simplex-valued samples (it is 1 minus the others), as SS-DDPM does.

    ``x`` keeps its type (tensor or array); the *last axis* is cut, matching the reference code's
    ``samples[..., :-1]`` before flattening. Returns ``x`` unchanged when ``is_simplex`` is false.
    """
    if not is_simplex:
        return x
    if x.shape[-1] < 2:
        raise ValueError("a simplex point needs at least 2 coordinates")
    return x[..., :-1]


def nan_guard(x, max_fraction: float = 0.2):
    """The reference protocol's NaN handling: fail if ≥ ``max_fraction`` of entries are NaN, else ``nan_to_num``."""
    is_tensor = isinstance(x, torch.Tensor)
    arr = x.detach().cpu().numpy() if is_tensor else np.asarray(x)
    frac = float(np.isnan(arr).mean()) if arr.size else 0.0
    if frac >= max_fraction:
        raise ValueError(f"{frac:.1%} of the sample entries are NaN (limit {max_fraction:.0%})")
    return torch.nan_to_num(x) if is_tensor else np.nan_to_num(arr)


# --------------------------------------------------------------------------------------------------
# kNN KL
# --------------------------------------------------------------------------------------------------
def knn_kl(p_samples, q_samples, k: int = 10, p: float = math.inf) -> float:
    """Wang–Kulkarni–Verdú kNN estimate of KL(P‖Q) in nats, from x ~ P (n points) and y ~ Q (m points).

    ``KL ≈ d · mean_i log(ν_k(i) / ρ_k(i)) + log(m / (n − 1))`` where ρ_k(i) is the distance from x_i to
    its k-th nearest neighbour among the *other* x's (self excluded) and ν_k(i) the distance to its
    k-th nearest neighbour among the y's. This is NPEET's ``kldiv(x, xp, k, base=np.e)``: the default
    ``p=inf`` uses the max-norm as NPEET does (any norm gives a consistent estimator; ``p=2`` is
    Euclidean). Neighbours come from ``scipy.spatial.cKDTree``.

    Duplicates: distances are clamped below at :data:`DISTANCE_FLOOR` (1e-300) before the log, so
    repeated points give a large finite value instead of ``±inf``/``nan``; no jitter is added.
    """
    x, y = _pair(p_samples, q_samples)
    n, d = x.shape
    m = y.shape[0]
    if not (1 <= k < n and k <= m):
        raise ValueError(f"need 1 <= k < n and k <= m, got k={k}, n={n}, m={m}")
    # k + 1 neighbours within x: the first is the point itself (or a duplicate at distance 0 — either
    # way the (k+1)-th distance is the k-th distance with self excluded).
    rho = cKDTree(x).query(x, k=k + 1, p=p)[0][:, k]
    nu = cKDTree(y).query(x, k=[k], p=p)[0][:, 0]
    log_ratio = np.log(np.maximum(nu, DISTANCE_FLOOR)) - np.log(np.maximum(rho, DISTANCE_FLOOR))
    return float(d * log_ratio.mean() + math.log(m) - math.log(n - 1))


def symmetrised_knn_kl(a, b, k: int = 10, reduction: str = "mean", p: float = math.inf) -> float:
    """Symmetrised kNN KL between two samples (catalog name ``knn-kl``), in nats.

    NPEET's ``kldiv`` is one-directional; the SS-DDPM metric (``npeet_symmetric_kl_estimation``)
    symmetrises it as ``(kldiv(q, p, k=10, base=e) + kldiv(p, q, k=10, base=e)) / 2``. The default
    ``reduction="mean"`` reproduces that **average** ``(KL(a‖b) + KL(b‖a)) / 2``;
    ``reduction="sum"`` returns the **sum** ``KL(a‖b) + KL(b‖a)`` (Jeffreys divergence), twice the mean.
    Symmetric in its arguments by construction. See :func:`knn_kl` for the estimator.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    a, b = _pair(a, b)
    total = knn_kl(a, b, k=k, p=p) + knn_kl(b, a, k=k, p=p)
    return total / 2.0 if reduction == "mean" else total


# --------------------------------------------------------------------------------------------------
# pairwise-distance helpers (blocked so that memory stays O(block²))
# --------------------------------------------------------------------------------------------------
def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Exact differences (no ‖x‖² + ‖y‖² − 2xy expansion): zero on coincident points, no negatives.
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square_()


def _blocked_sum(x: np.ndarray, y: np.ndarray, fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Σ_ij fn(‖x_i − y_j‖²), computed block by block in float64."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(0, xt.shape[0], _BLOCK):
        xi = xt[i:i + _BLOCK]
        for j in range(0, yt.shape[0], _BLOCK):
            total += fn(_sq_dists(xi, yt[j:j + _BLOCK])).sum()
    return float(total)


def median_bandwidth(a, b=None, max_points: int = MEDIAN_MAX_POINTS) -> float:
    """Median heuristic: the median Euclidean distance over distinct pairs (i < j) of the pooled sample.

    If the pooled sample has more than ``max_points`` points, an evenly spaced deterministic subset of
    ``max_points`` of them is used (``np.linspace`` indices). Falls back to 1.0 if the median is 0.
    """
    z = as_matrix(a) if b is None else np.concatenate(_pair(a, b), axis=0)
    if z.shape[0] > max_points:
        z = z[np.linspace(0, z.shape[0] - 1, max_points).round().astype(np.int64)]
    if z.shape[0] < 2:
        raise ValueError("need at least 2 points for the median heuristic")
    zt = torch.from_numpy(z)
    dist = torch.cdist(zt, zt, compute_mode="donot_use_mm_for_euclid_dist")
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    med = float(np.median(dist[iu[0], iu[1]].numpy()))  # numpy median: mean of the two middle values
    return med if med > 0 else 1.0


# --------------------------------------------------------------------------------------------------
# MMD² and energy distance
# --------------------------------------------------------------------------------------------------
def mmd2(a, b, bandwidth: float | None = None) -> float:
    """Unbiased MMD² (U-statistic) with the Gaussian kernel ``k(x, y) = exp(−‖x − y‖² / (2σ²))``.

    ``MMD² = 1/(n(n−1)) Σ_{i≠i'} k(a_i, a_i') + 1/(m(m−1)) Σ_{j≠j'} k(b_j, b_j') − 2/(nm) Σ_ij k(a_i, b_j)``.
    It can be slightly negative when the distributions agree. σ = ``bandwidth``; when ``None`` it is
    :func:`median_bandwidth` of the pooled sample (median of pairwise distances over distinct pairs).
    """
    a, b = _pair(a, b)
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        raise ValueError("the unbiased MMD² needs at least 2 points per sample")
    sigma = median_bandwidth(a, b) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise ValueError(f"bandwidth must be positive, got {sigma}")
    two_var = 2.0 * sigma * sigma
    gamma = 1.0 / two_var if two_var > 0 else math.inf
    if not 0.0 < gamma < math.inf:  # 1/(2σ²) under- or overflows float64: the kernel is 1 or 0 everywhere
        what = "overflows" if gamma == math.inf else "is 0"
        raise ValueError(f"bandwidth {sigma:g} is out of range: 1/(2σ²) {what} in float64; use a bandwidth of "
                         "the scale of the data's pairwise distances (or None: the median heuristic)")

    def kern(sq: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * sq)

    # k(x, x) = 1 exactly on the diagonal, so removing the diagonal subtracts n (resp. m).
    kxx = (_blocked_sum(a, a, kern) - n) / (n * (n - 1))
    kyy = (_blocked_sum(b, b, kern) - m) / (m * (m - 1))
    kxy = _blocked_sum(a, b, kern) / (n * m)
    return float(kxx + kyy - 2.0 * kxy)


def energy_distance(a, b, unbiased: bool = False) -> float:
    """Energy distance ``2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖`` (Euclidean norm; squared form, not its root).

    Default: the **V-statistic** (all n² / m² within-sample pairs, diagonal included), which is ≥ 0 and
    in 1-D equals ``scipy.stats.energy_distance(u, v) ** 2`` exactly (scipy returns the square root,
    ``sqrt(2)·‖F_u − F_v‖₂``, of this V-statistic). ``unbiased=True`` gives the U-statistic (within-sample
    sums divided by n(n−1) and m(m−1)), which may be slightly negative.
    """
    a, b = _pair(a, b)
    n, m = a.shape[0], b.shape[0]
    if unbiased and (n < 2 or m < 2):
        raise ValueError("the U-statistic needs at least 2 points per sample")
    dist = torch.sqrt
    sxy = _blocked_sum(a, b, dist) / (n * m)
    nxx, nyy = (n * (n - 1), m * (m - 1)) if unbiased else (n * n, m * m)
    sxx = _blocked_sum(a, a, dist) / nxx
    syy = _blocked_sum(b, b, dist) / nyy
    return float(2.0 * sxy - sxx - syy)


METRIC_FUNCTIONS: dict[str, Callable[..., float]] = {
    "knn-kl": symmetrised_knn_kl,
    "mmd": mmd2,
    "energy": energy_distance,
}
"""Catalog name (``mstar_engine.metrics.catalog.METRICS``) → sample-based metric function."""


# --------------------------------------------------------------------------------------------------
# noise floor
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoiseFloor:
    """The metric between independent data subsamples: ``mean`` ± ``std`` over ``values``."""

    mean: float
    std: float
    values: tuple[float, ...]

    def __float__(self) -> float:
        return self.mean

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.std:.2g}"


def noise_floor(metric: Callable[..., float] | str, data, n: int, repeats: int = 5,
                generator: torch.Generator | int | None = None, **metric_kwargs) -> NoiseFloor:
    """The metric between two independent, disjoint, equal-size (``n``) random subsamples of ``data``.

    This is the value a perfect model would get with ``n`` samples — the reference printed beside a
    model's value. Each repeat draws a fresh permutation of ``data`` (``torch.randperm`` with
    ``generator``; an ``int`` is used as a seed, ``None`` means seed 0 so the result is deterministic)
    and compares its first ``n`` rows with the next ``n``; needs ``2n ≤ len(data)``. ``metric`` is a
    function ``metric(a, b, **metric_kwargs) -> float`` or a catalog name from :data:`METRIC_FUNCTIONS`.
    ``std`` is the sample standard deviation (ddof = 1; 0 for a single repeat).
    """
    if isinstance(metric, str):
        try:
            metric = METRIC_FUNCTIONS[metric]
        except KeyError:
            raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRIC_FUNCTIONS)}") from None
    x = as_matrix(data)
    if n < 1 or repeats < 1:
        raise ValueError("n and repeats must be positive")
    if 2 * n > x.shape[0]:
        raise ValueError(f"need 2n = {2 * n} <= {x.shape[0]} data points for two disjoint subsamples")
    if not isinstance(generator, torch.Generator):
        seed = 0 if generator is None else int(generator)
        generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(repeats):
        perm = torch.randperm(x.shape[0], generator=generator).numpy()
        values.append(float(metric(x[perm[:n]], x[perm[n:2 * n]], **metric_kwargs)))
    vals = np.asarray(values)
    std = float(vals.std(ddof=1)) if repeats > 1 else 0.0
    return NoiseFloor(mean=float(vals.mean()), std=std, values=tuple(values))
