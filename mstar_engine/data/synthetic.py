"""Built-in synthetic datasets: seeded mixtures living in each family's domain.

``make_synthetic(name, n, seed, dim)`` draws ``n`` examples of the dataset ``name`` (every entry
of :data:`mstar_engine.data.catalog.DATASETS` with ``kind == "synthetic"``) as a float64 tensor;
the same ``(name, n, seed, dim)`` always gives the identical tensor. Randomness comes only from a
``numpy.random.Generator`` seeded from ``SeedSequence([seed, key(name)])``, so different datasets
drawn with the same seed are independent, and scipy samplers are passed that Generator.

Every generator first draws the component labels (``Generator.choice`` with the mixture weights)
and then each component's samples in component order. All component constants are module-level
and listed in each generator's docstring.

The Dirichlet and Wishart mixtures are the published ``m1`` mixtures of SS-DDPM (Okhotin et al.,
Table 1; ``lib/data/synthetic_datasets``); :func:`mixture_log_density` gives their exact log
density as a reference for evaluation.
"""
from __future__ import annotations

import math
import zlib
from typing import Callable

import numpy as np
import torch
from scipy import special
from torch import Tensor

from mstar_engine.data.catalog import DATASETS
from mstar_engine.data.splits import holdout_split

__all__ = [
    "SYNTHETIC_NAMES",
    "make_synthetic",
    "mixture_log_density",
    "mixture_mean",
    "holdout_split",
    "BOUNDARY_EPS",
]

#: How far Beta and Dirichlet samples are kept from the boundary of (0, 1) / the simplex.
BOUNDARY_EPS = 1e-6
#: Smallest value a Gamma sample is raised to (only matters for values that underflow).
POSITIVE_FLOOR = 1e-12

# ---------------------------------------------------------------------------- constants
# gaussian-mixture
GAUSS_COMPONENTS = 8
GAUSS_RADIUS = 2.0
GAUSS_STD = 0.2

# beta-mixture: (weight, (a_even, b_even), (a_odd, b_odd)) per component; coordinate j uses the
# even pair when j is even and the odd pair when j is odd.
BETA_WEIGHTS = (0.3, 0.3, 0.4)
BETA_PARAMS = (  # (a, b) for even coordinates, (a, b) for odd coordinates
    ((2.0, 8.0), (8.0, 2.0)),    # mean (0.2, 0.8, 0.2, ...)
    ((8.0, 2.0), (2.0, 8.0)),    # mean (0.8, 0.2, 0.8, ...)
    ((10.0, 10.0), (10.0, 10.0)),  # mean 0.5 everywhere, tight
)

# gamma-mixture: (shape, rate) for even / odd coordinates
GAMMA_WEIGHTS = (0.3, 0.3, 0.4)
GAMMA_PARAMS = (
    ((2.0, 2.0), (10.0, 2.0)),   # mean (1, 5, 1, ...)
    ((10.0, 2.0), (2.0, 2.0)),   # mean (5, 1, 5, ...)
    ((30.0, 10.0), (30.0, 10.0)),  # mean 3 everywhere, tight
)

# dirichlet-mixture: SS-DDPM m1, weights ∝ (.3, .4, .4)
DIRICHLET_ALPHAS = np.array([[28.0, 1.2, 16.8], [12.0, 12.2, 2.8], [6.0, 36.2, 6.8]])
DIRICHLET_WEIGHTS = np.array([0.3, 0.4, 0.4]) / 1.1

# wishart-mixture: SS-DDPM m1, equal weights; scipy's scale convention (mean = df · scale)
WISHART_DFS = np.array([320.0, 40.0, 120.0])
WISHART_SCALES = np.array([
    np.array([[10.0, -9.0], [-9.0, 10.0]]) / (320 * 540 / 400),
    np.array([[12.0, 3.0], [3.0, 4.0]]) / (40 * 440 / 300),
    np.array([[6.0, 8.0], [8.0, 25.0]]) / (120 * 720 / 200),
])
WISHART_WEIGHTS = np.full(3, 1.0 / 3.0)

# sphere-mixture: mean directions are the tetrahedron vertices restricted to the first
# min(d, 3) coordinates (zero elsewhere), normalised.
SPHERE_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
SPHERE_VERTICES = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
SPHERE_KAPPAS = (20.0, 20.0, 50.0, 10.0)

# circle-mixture: component c has location CIRCLE_LOCS[c] + CIRCLE_SHIFT · j on angle j (wrapped)
CIRCLE_WEIGHTS = (0.3, 0.3, 0.4)
CIRCLE_LOCS = (-2.0, 0.5, 2.5)
CIRCLE_KAPPAS = (4.0, 8.0, 16.0)
CIRCLE_SHIFT = 0.7

# token-mixture: K = 4 classes, 3 Markov chains (initial distribution, transition matrix)
TOKEN_CLASSES = 4
TOKEN_WEIGHTS = (0.4, 0.3, 0.3)
TOKEN_INITS = np.array([
    [0.25, 0.25, 0.25, 0.25],
    [0.70, 0.10, 0.10, 0.10],
    [0.10, 0.10, 0.10, 0.70],
])


def _token_transitions() -> np.ndarray:
    k = TOKEN_CLASSES
    sticky = np.full((k, k), 0.05) + 0.80 * np.eye(k)            # stay with 0.85
    cycle = np.full((k, k), 0.2 / 3)                             # k -> k+1 with 0.8
    jump = np.zeros((k, k))                                      # k -> k+2: .6, k -> k-1: .3
    for i in range(k):
        cycle[i, (i + 1) % k] = 0.8
        jump[i, (i + 2) % k] = 0.6
        jump[i, (i - 1) % k] = 0.3
        jump[i, i] = 0.05
        jump[i, (i + 1) % k] = 0.05
    return np.stack([sticky, cycle, jump])


TOKEN_TRANSITIONS = _token_transitions()

# ---------------------------------------------------------------------------- helpers


def _rng(name: str, seed: int) -> np.random.Generator:
    key = zlib.crc32(name.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([int(seed), key]))


def _labels(rng: np.random.Generator, n: int, weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return rng.choice(len(w), size=n, p=w / w.sum())


def _by_component(rng: np.random.Generator, n: int, weights, event_shape: tuple[int, ...],
                  draw: Callable[[int, int], np.ndarray]) -> np.ndarray:
    """Labels from ``weights``, then ``draw(c, count)`` for each component c in order."""
    labels = _labels(rng, n, weights)
    out = np.empty((n, *event_shape), dtype=np.float64)
    for c in range(len(weights)):
        idx = np.flatnonzero(labels == c)
        if idx.size:
            out[idx] = np.asarray(draw(c, idx.size), dtype=np.float64).reshape(idx.size, *event_shape)
    return out


def _alternating(params, d: int) -> np.ndarray:
    """(d, 2) array: the even pair on even coordinates, the odd pair on odd ones."""
    even, odd = params
    return np.array([even if j % 2 == 0 else odd for j in range(d)], dtype=np.float64)


# ---------------------------------------------------------------------------- generators


def _gaussian_mixture(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """8 equally weighted Gaussians with means 2·(cos 2πk/8, sin 2πk/8) in the first two
    coordinates, std 0.2 there; the other d − 2 coordinates are N(0, 0.2²). Needs d ≥ 2."""
    if d < 2:
        raise ValueError(f"gaussian-mixture needs dim ≥ 2 (the circle lives in the first two coordinates), got {d}")
    labels = _labels(rng, n, np.full(GAUSS_COMPONENTS, 1.0 / GAUSS_COMPONENTS))
    angle = 2 * math.pi * labels / GAUSS_COMPONENTS
    x = GAUSS_STD * rng.standard_normal((n, d))
    x[:, 0] += GAUSS_RADIUS * np.cos(angle)
    x[:, 1] += GAUSS_RADIUS * np.sin(angle)
    return x


def _beta_mixture(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """3 product-Beta components in (0,1)^d, weights (.3, .3, .4). Coordinate j uses
    (a, b) = component's even pair for even j, odd pair for odd j:
    c0: Beta(2,8) / Beta(8,2); c1: Beta(8,2) / Beta(2,8); c2: Beta(10,10) on every coordinate.
    Values are clipped to [1e-6, 1 − 1e-6] (``BOUNDARY_EPS``) so they are strictly inside (0, 1)."""
    if d < 1:
        raise ValueError(f"beta-mixture needs dim ≥ 1, got {d}")

    def draw(c: int, m: int) -> np.ndarray:
        ab = _alternating(BETA_PARAMS[c], d)
        return rng.beta(ab[:, 0], ab[:, 1], size=(m, d))

    x = _by_component(rng, n, BETA_WEIGHTS, (d,), draw)
    return np.clip(x, BOUNDARY_EPS, 1.0 - BOUNDARY_EPS)


def _gamma_mixture(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """3 product-Gamma components in (0,∞)^d, weights (.3, .3, .4), parameters (shape, rate) with
    coordinate j using the even pair for even j and the odd pair for odd j:
    c0: Gamma(2, 2) / Gamma(10, 2) (means 1 / 5); c1: Gamma(10, 2) / Gamma(2, 2);
    c2: Gamma(30, 10) on every coordinate (mean 3). Values below 1e-12 (only by underflow) are
    raised to 1e-12."""
    if d < 1:
        raise ValueError(f"gamma-mixture needs dim ≥ 1, got {d}")

    def draw(c: int, m: int) -> np.ndarray:
        sr = _alternating(GAMMA_PARAMS[c], d)
        return rng.gamma(sr[:, 0], 1.0 / sr[:, 1], size=(m, d))

    x = _by_component(rng, n, GAMMA_WEIGHTS, (d,), draw)
    return np.maximum(x, POSITIVE_FLOOR)


def _dirichlet_mixture(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """SS-DDPM ``m1``: Dir(28, 1.2, 16.8), Dir(12, 12.2, 2.8), Dir(6, 36.2, 6.8) with weights
    ∝ (.3, .4, .4) (i.e. (3, 4, 4)/11). Components are raised to at least 1e-6 (``BOUNDARY_EPS``)
    and the vector renormalised, so every component is strictly positive and rows sum to 1."""
    if d != 3:
        raise ValueError(f"dirichlet-mixture is the published K = 3 mixture; dim cannot be set (got {d})")

    def draw(c: int, m: int) -> np.ndarray:
        return rng.dirichlet(DIRICHLET_ALPHAS[c], size=m)

    x = _by_component(rng, n, DIRICHLET_WEIGHTS, (3,), draw)
    x = np.maximum(x, BOUNDARY_EPS)
    return x / x.sum(-1, keepdims=True)


def _wishart_mixture(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """SS-DDPM ``m1``: equally weighted Wishart(df, S) on 2×2 SPD matrices (scipy convention,
    mean df·S) with df = 320, 40, 120 and S = [[10,−9],[−9,10]]/(320·540/400),
    [[12,3],[3,4]]/(40·440/300), [[6,8],[8,25]]/(120·720/200). Samples are symmetrised,
    (X + Xᵀ)/2."""
    if d != 2:
        raise ValueError(f"wishart-mixture is the published p = 2 mixture; dim cannot be set (got {d})")

    def draw(c: int, m: int) -> np.ndarray:
        from scipy import stats  # imported where used: scipy.stats takes ~1 s to import
        return stats.wishart(df=WISHART_DFS[c], scale=WISHART_SCALES[c]).rvs(size=m, random_state=rng)

    x = _by_component(rng, n, WISHART_WEIGHTS, (2, 2), draw)
    return 0.5 * (x + np.swapaxes(x, -1, -2))


def _sphere_mus(d: int) -> np.ndarray:
    k = min(d, 3)
    mus = np.zeros((len(SPHERE_VERTICES), d))
    mus[:, :k] = SPHERE_VERTICES[:, :k]
    return mus / np.linalg.norm(mus, axis=1, keepdims=True)


def _sphere_mixture(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """4 equally weighted von Mises-Fisher components on S^{d−1} (d ≥ 2) with concentrations
    κ = 20, 20, 50, 10 and mean directions the tetrahedron vertices (1,1,1), (1,−1,−1),
    (−1,1,−1), (−1,−1,1) restricted to the first min(d, 3) coordinates (zeros after), normalised.
    Drawn with ``scipy.stats.vonmises_fisher``, then renormalised to unit length exactly."""
    if d < 2:
        raise ValueError(f"sphere-mixture needs ambient dimension dim ≥ 2, got {d}")
    mus = _sphere_mus(d)

    def draw(c: int, m: int) -> np.ndarray:
        from scipy import stats
        return stats.vonmises_fisher(mus[c], SPHERE_KAPPAS[c]).rvs(size=m, random_state=rng)

    x = _by_component(rng, n, SPHERE_WEIGHTS, (d,), draw)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _wrap(x: np.ndarray) -> np.ndarray:
    y = np.remainder(x + math.pi, 2 * math.pi) - math.pi
    y[y >= math.pi] = -math.pi
    y[y < -math.pi] = -math.pi
    return y


def _circle_mixture(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """3 components, each a product of d independent von Mises angles, weights (.3, .3, .4):
    component c has concentration κ_c = 4, 8, 16 and location μ_c + 0.7·j on angle j with
    μ = (−2.0, 0.5, 2.5). Angles are wrapped into [−π, π)."""
    if d < 1:
        raise ValueError(f"circle-mixture needs dim ≥ 1 angles, got {d}")
    shift = CIRCLE_SHIFT * np.arange(d)

    def draw(c: int, m: int) -> np.ndarray:
        return rng.vonmises(CIRCLE_LOCS[c] + shift, CIRCLE_KAPPAS[c], size=(m, d))

    return _wrap(_by_component(rng, n, CIRCLE_WEIGHTS, (d,), draw))


def _token_mixture(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Sequences of L tokens over K = 4 classes (one-hot, shape (n, L, 4)) from a mixture of 3
    Markov chains with weights (.4, .3, .3):
    c0 "sticky": uniform start, stay with .85, move to each other class with .05;
    c1 "cycle": start (.7, .1, .1, .1), k → k+1 (mod 4) with .8, other classes 0.2/3 each;
    c2 "jump": start (.1, .1, .1, .7), k → k+2 with .6, k → k−1 with .3, k and k+1 with .05 each."""
    if length < 1:
        raise ValueError(f"token-mixture needs sequence length dim ≥ 1, got {length}")
    labels = _labels(rng, n, TOKEN_WEIGHTS)
    tokens = np.empty((n, length), dtype=np.int64)
    cum_init = np.cumsum(TOKEN_INITS, axis=1)
    cum_trans = np.cumsum(TOKEN_TRANSITIONS, axis=2)
    u = rng.random((n, length))
    k = TOKEN_CLASSES
    tokens[:, 0] = np.minimum((u[:, :1] > cum_init[labels]).sum(1), k - 1)
    for pos in range(1, length):
        rows = cum_trans[labels, tokens[:, pos - 1]]          # (n, K)
        tokens[:, pos] = np.minimum((u[:, pos:pos + 1] > rows).sum(1), k - 1)
    return np.eye(k, dtype=np.float64)[tokens]


_GENERATORS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "gaussian-mixture": _gaussian_mixture,
    "beta-mixture": _beta_mixture,
    "gamma-mixture": _gamma_mixture,
    "dirichlet-mixture": _dirichlet_mixture,
    "wishart-mixture": _wishart_mixture,
    "sphere-mixture": _sphere_mixture,
    "circle-mixture": _circle_mixture,
    "token-mixture": _token_mixture,
}

#: Every synthetic dataset name of the catalog.
SYNTHETIC_NAMES: tuple[str, ...] = tuple(k for k, v in DATASETS.items() if v.kind == "synthetic")


def _default_dim(name: str) -> int:
    return DATASETS[name].shape[0]


def make_synthetic(name: str, n: int, seed: int, dim: int | None = None) -> Tensor:
    """``n`` float64 examples of the synthetic dataset ``name`` (see each generator's docstring).

    ``dim`` sets what the catalog's ``dim_meaning`` says (dimension, ambient dimension, number of
    angles, sequence length); ``None`` takes the catalog's default shape. The published Dirichlet
    and Wishart mixtures have a fixed shape: ``dim`` must then be ``None`` or that size (3 / 2).
    Shapes: ``(n, d)``, ``(n, 3)`` for dirichlet-mixture, ``(n, 2, 2)`` for wishart-mixture and
    ``(n, L, 4)`` one-hot for token-mixture. Deterministic in ``(name, n, seed, dim)``.
    """
    if name not in _GENERATORS or name not in DATASETS or DATASETS[name].kind != "synthetic":
        raise ValueError(f"unknown synthetic dataset {name!r}; known: {', '.join(SYNTHETIC_NAMES)}")
    n = int(n)
    if n < 1:
        raise ValueError(f"number of examples must be ≥ 1, got {n}")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    d = _default_dim(name) if dim is None else int(dim)
    x = _GENERATORS[name](_rng(name, int(seed)), n, d)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


# ---------------------------------------------------------------------------- exact references


def mixture_mean(name: str) -> Tensor:
    """Closed-form mean of a published mixture: Σ w_i α_i/Σα_i (dirichlet-mixture, shape (3,)),
    Σ w_i df_i S_i (wishart-mixture, shape (2, 2))."""
    if name == "dirichlet-mixture":
        w = DIRICHLET_WEIGHTS / DIRICHLET_WEIGHTS.sum()
        m = (w[:, None] * DIRICHLET_ALPHAS / DIRICHLET_ALPHAS.sum(1, keepdims=True)).sum(0)
    elif name == "wishart-mixture":
        w = WISHART_WEIGHTS / WISHART_WEIGHTS.sum()
        m = (w[:, None, None] * WISHART_DFS[:, None, None] * WISHART_SCALES).sum(0)
    else:
        raise ValueError(f"mixture_mean is available for dirichlet-mixture and wishart-mixture, not {name!r}")
    return torch.from_numpy(m)


def mixture_log_density(name: str, x: Tensor) -> Tensor:
    """Exact log density of the published mixtures at ``x``: (n, 3) points strictly inside the
    simplex for dirichlet-mixture, (n, 2, 2) SPD matrices for wishart-mixture. Returns (n,)
    float64: logsumexp_i (log w_i + log p_i(x)) with scipy's ``dirichlet`` / ``wishart`` logpdf
    (scipy raises ValueError for points outside the support)."""
    from scipy import stats
    xs = torch.as_tensor(x).detach().to("cpu", torch.float64).numpy()
    if name == "dirichlet-mixture":
        if xs.ndim != 2 or xs.shape[1] != 3:
            raise ValueError(f"dirichlet-mixture density needs points of shape (n, 3), got {xs.shape}")
        w = DIRICHLET_WEIGHTS / DIRICHLET_WEIGHTS.sum()
        comps = [stats.dirichlet.logpdf(xs.T, a) for a in DIRICHLET_ALPHAS]
    elif name == "wishart-mixture":
        if xs.ndim != 3 or xs.shape[1:] != (2, 2):
            raise ValueError(f"wishart-mixture density needs matrices of shape (n, 2, 2), got {xs.shape}")
        w = WISHART_WEIGHTS / WISHART_WEIGHTS.sum()
        q = np.moveaxis(xs, 0, -1)  # scipy takes (p, p, n)
        comps = [np.atleast_1d(stats.wishart.logpdf(q, df=df, scale=s)) for df, s in zip(WISHART_DFS, WISHART_SCALES)]
    else:
        raise ValueError(f"mixture_log_density is available for dirichlet-mixture and wishart-mixture, not {name!r}")
    logp = np.stack([np.log(wi) + np.reshape(c, -1) for wi, c in zip(w, comps)])
    return torch.from_numpy(np.asarray(special.logsumexp(logp, axis=0), dtype=np.float64))
