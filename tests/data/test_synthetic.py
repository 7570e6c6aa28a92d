"""Built-in synthetic datasets: domains, shapes, determinism, published moments, hold-out split."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from mstar_engine.data.catalog import DATASETS
from mstar_engine.data.splits import holdout_split
from mstar_engine.data.synthetic import (
    DIRICHLET_ALPHAS,
    DIRICHLET_WEIGHTS,
    SYNTHETIC_NAMES,
    TOKEN_INITS,
    TOKEN_WEIGHTS,
    WISHART_DFS,
    WISHART_SCALES,
    make_synthetic,
    mixture_log_density,
    mixture_mean,
)
from mstar_engine.families import REGISTRY, DomainError
from tests.families.fixtures import toy

FAMILY_OF = {
    "gaussian-mixture": "gaussian",
    "beta-mixture": "beta",
    "gamma-mixture": "gamma",
    "dirichlet-mixture": "dirichlet",
    "wishart-mixture": "wishart",
    "sphere-mixture": "vmf",
    "circle-mixture": "von-mises",
    "token-mixture": "categorical",
}

#: (name, dim, expected event shape)
SHAPES = [
    ("gaussian-mixture", None, (2,)),
    ("gaussian-mixture", 5, (5,)),
    ("beta-mixture", None, (2,)),
    ("beta-mixture", 3, (3,)),
    ("gamma-mixture", None, (2,)),
    ("gamma-mixture", 4, (4,)),
    ("dirichlet-mixture", None, (3,)),
    ("dirichlet-mixture", 3, (3,)),
    ("wishart-mixture", None, (2, 2)),
    ("wishart-mixture", 2, (2, 2)),
    ("sphere-mixture", None, (3,)),
    ("sphere-mixture", 2, (2,)),
    ("sphere-mixture", 5, (5,)),
    ("circle-mixture", None, (1,)),
    ("circle-mixture", 3, (3,)),
    ("token-mixture", None, (8, 4)),
    ("token-mixture", 5, (5, 4)),
]


def family_for(name: str, event_shape: tuple[int, ...]):
    """The dataset's family, built from its ``toy()`` schedule with the dataset's event shape."""
    cls = REGISTRY[FAMILY_OF[name]]
    small = toy(cls)
    return cls(event_shape, **{k: getattr(small, k) for k in cls.schedule_params})


def test_every_synthetic_catalog_entry_is_covered():
    synthetic = {k for k, v in DATASETS.items() if v.kind == "synthetic"}
    assert set(SYNTHETIC_NAMES) == synthetic == set(FAMILY_OF)
    for name in synthetic:
        assert REGISTRY[FAMILY_OF[name]].domain == DATASETS[name].domain


@pytest.mark.parametrize("name,dim,event", SHAPES)
def test_shape_dtype_and_family_domain(name, dim, event):
    x = make_synthetic(name, 300, seed=3, dim=dim)
    assert x.dtype == torch.float64
    assert tuple(x.shape) == (300, *event)
    if dim is None:
        assert event == DATASETS[name].shape
    family_for(name, event).check_domain(x, what=name)  # raises DomainError if outside


def test_domain_check_is_meaningful():
    """Sanity: the family check used above does reject data pushed to the boundary."""
    x = make_synthetic("beta-mixture", 10, seed=0).clone()
    x[0, 0] = 0.0
    with pytest.raises(DomainError):
        family_for("beta-mixture", (2,)).check_domain(x)


def test_strict_domain_details():
    b = make_synthetic("beta-mixture", 2000, seed=1, dim=3)
    assert bool(((b > 0) & (b < 1)).all())
    d = make_synthetic("dirichlet-mixture", 2000, seed=1)
    assert bool((d > 0).all()) and torch.allclose(d.sum(-1), torch.ones(2000, dtype=torch.float64), atol=1e-12)
    w = make_synthetic("wishart-mixture", 2000, seed=1)
    assert torch.equal(w, w.transpose(-1, -2))
    assert bool((torch.linalg.eigvalsh(w) > 0).all())
    c = make_synthetic("circle-mixture", 2000, seed=1, dim=2)
    assert bool(((c >= -math.pi) & (c < math.pi)).all())
    t = make_synthetic("token-mixture", 500, seed=1)
    assert bool(((t == 0) | (t == 1)).all()) and bool((t.sum(-1) == 1).all())
    g = make_synthetic("gamma-mixture", 2000, seed=1)
    assert bool((g > 0).all())


@pytest.mark.parametrize("name", sorted(FAMILY_OF))
def test_deterministic_and_seed_sensitive(name):
    a = make_synthetic(name, 64, seed=7)
    b = make_synthetic(name, 64, seed=7)
    c = make_synthetic(name, 64, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_dim_changes_output_deterministically():
    a = make_synthetic("sphere-mixture", 50, seed=0, dim=4)
    assert torch.equal(a, make_synthetic("sphere-mixture", 50, seed=0, dim=4))


@pytest.mark.parametrize("name,dim", [("dirichlet-mixture", 4), ("wishart-mixture", 3),
                                      ("gaussian-mixture", 1), ("sphere-mixture", 1), ("token-mixture", 0)])
def test_bad_dim_rejected(name, dim):
    with pytest.raises(ValueError):
        make_synthetic(name, 10, seed=0, dim=dim)


def test_bad_arguments_rejected():
    with pytest.raises(ValueError, match="unknown synthetic dataset"):
        make_synthetic("mnist", 10, seed=0)
    with pytest.raises(ValueError):
        make_synthetic("nope", 10, seed=0)
    with pytest.raises(ValueError):
        make_synthetic("beta-mixture", 0, seed=0)


# ---------------------------------------------------------------------------- published moments


def test_dirichlet_mixture_mean_matches_closed_form():
    n = 20000
    x = make_synthetic("dirichlet-mixture", n, seed=11)
    w = np.array([0.3, 0.4, 0.4]) / 1.1
    alphas = np.array([[28, 1.2, 16.8], [12, 12.2, 2.8], [6, 36.2, 6.8]])
    expected = (w[:, None] * alphas / alphas.sum(1, keepdims=True)).sum(0)
    np.testing.assert_allclose(DIRICHLET_ALPHAS, alphas)
    np.testing.assert_allclose(DIRICHLET_WEIGHTS, w)
    np.testing.assert_allclose(mixture_mean("dirichlet-mixture").numpy(), expected)
    se = x.std(0).numpy() / math.sqrt(n)
    assert np.all(np.abs(x.mean(0).numpy() - expected) < 4 * se), (x.mean(0), expected, se)


def test_wishart_mixture_mean_matches_closed_form():
    n = 20000
    x = make_synthetic("wishart-mixture", n, seed=12)
    dfs = np.array([320.0, 40.0, 120.0])
    scales = np.array([np.array([[10, -9], [-9, 10]]) / (320 * 540 / 400),
                       np.array([[12, 3], [3, 4]]) / (40 * 440 / 300),
                       np.array([[6, 8], [8, 25]]) / (120 * 720 / 200)])
    np.testing.assert_allclose(WISHART_DFS, dfs)
    np.testing.assert_allclose(WISHART_SCALES, scales)
    expected = (dfs[:, None, None] * scales).mean(0)
    np.testing.assert_allclose(mixture_mean("wishart-mixture").numpy(), expected)
    se = x.std(0).numpy() / math.sqrt(n)
    assert np.all(np.abs(x.mean(0).numpy() - expected) < 4 * se), (x.mean(0), expected, se)


def test_gaussian_mixture_geometry():
    x = make_synthetic("gaussian-mixture", 4000, seed=2, dim=4).numpy()
    r = np.linalg.norm(x[:, :2], axis=1)
    assert abs(r.mean() - 2.0) < 0.05
    assert abs(x[:, 2:].std() - 0.2) < 0.01
    angle = np.arctan2(x[:, 1], x[:, 0])
    k = np.round(angle / (2 * math.pi / 8)) % 8
    assert len(np.unique(k)) == 8


def test_token_mixture_first_token_marginal():
    n = 8000
    x = make_synthetic("token-mixture", n, seed=5, dim=3)
    w = np.asarray(TOKEN_WEIGHTS)
    expected = (w[:, None] * TOKEN_INITS).sum(0)
    freq = x[:, 0].mean(0).numpy()
    se = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(freq - expected) < 4 * se)


# ---------------------------------------------------------------------------- exact densities


def test_mixture_log_density_matches_pointwise_scipy():
    x = make_synthetic("dirichlet-mixture", 5, seed=0)
    got = mixture_log_density("dirichlet-mixture", x).numpy()
    w = DIRICHLET_WEIGHTS / DIRICHLET_WEIGHTS.sum()
    for i, xi in enumerate(x.numpy()):
        ref = np.log(sum(wk * stats.dirichlet.pdf(xi, a) for wk, a in zip(w, DIRICHLET_ALPHAS)))
        assert got[i] == pytest.approx(ref, rel=1e-10)
    m = make_synthetic("wishart-mixture", 4, seed=0)
    got = mixture_log_density("wishart-mixture", m).numpy()
    assert got.shape == (4,)
    for i, mi in enumerate(m.numpy()):
        ref = np.log(np.mean([stats.wishart.pdf(mi, df=df, scale=s) for df, s in zip(WISHART_DFS, WISHART_SCALES)]))
        assert got[i] == pytest.approx(ref, rel=1e-10)
    assert mixture_log_density("wishart-mixture", m[:1]).shape == (1,)


def test_dirichlet_mixture_density_normalised():
    """E_{u ~ Uniform(simplex)}[p(u)] = 1 / area = 1/2 (Monte Carlo, 4 SE)."""
    n = 20000
    u = np.random.default_rng(0).dirichlet([1.0, 1.0, 1.0], size=n)
    u = np.maximum(u, 1e-12)
    u /= u.sum(1, keepdims=True)
    p = np.exp(mixture_log_density("dirichlet-mixture", torch.from_numpy(u)).numpy()) / 2
    assert abs(p.mean() - 1) < 4 * p.std() / math.sqrt(n)


def test_mixture_density_rejects_other_names():
    with pytest.raises(ValueError):
        mixture_log_density("beta-mixture", torch.rand(3, 2))


# ---------------------------------------------------------------------------- hold-out split


@pytest.mark.parametrize("n,fraction", [(100, 0.1), (7, 0.5), (10, 0.0), (33, 0.25), (5, 1.0)])
def test_holdout_split_sizes_disjoint_cover(n, fraction):
    x = torch.arange(n, dtype=torch.float64).unsqueeze(1).repeat(1, 2)
    train, held = holdout_split(x, fraction, seed=4)
    assert held.shape[0] == round(n * fraction)
    assert train.shape[0] + held.shape[0] == n
    assert train.shape[1:] == held.shape[1:] == (2,)
    tr, he = set(train[:, 0].tolist()), set(held[:, 0].tolist())
    assert not tr & he
    assert tr | he == set(range(n))


def test_holdout_split_deterministic_and_seeded():
    x = make_synthetic("wishart-mixture", 200, seed=0)
    a_train, a_held = holdout_split(x, 0.2, seed=1)
    b_train, b_held = holdout_split(x, 0.2, seed=1)
    assert torch.equal(a_train, b_train) and torch.equal(a_held, b_held)
    _, c_held = holdout_split(x, 0.2, seed=2)
    assert not torch.equal(a_held, c_held)


def test_holdout_split_rejects_bad_fraction():
    with pytest.raises(ValueError):
        holdout_split(torch.zeros(10, 1), 1.5, seed=0)
    with pytest.raises(ValueError):
        holdout_split(torch.zeros(10, 1), -0.1, seed=0)
