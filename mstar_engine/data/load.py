"""Load the dataset a spec names, split it and validate it.

* :func:`load_dataset` turns a spec's ``[data]`` section into a
  :class:`~mstar_engine.data.dataset.LoadedData` (train and held-out tensors, domain, event shape)
  for the synthetic, offline and file datasets; :func:`load_data` dispatches image datasets to
  :func:`mstar_engine.data.images.load_images`.
* Batches are served by :mod:`mstar_engine.data.stream`.

Errors: :class:`DataError` (a ``ValueError``) for unusable data, :class:`MissingDependency` (an
``ImportError``) when an optional package that a dataset needs is not installed.
"""
from __future__ import annotations

from pathlib import Path
import numpy as np
import torch
from torch import Tensor

from mstar_engine.data.catalog import DATASETS, expand_path
from mstar_engine.data.dataset import LoadedData, check_finite
from mstar_engine.data.images import load_images
from mstar_engine.data.offline import DataError, MissingDependency, load_offline
from mstar_engine.data.splits import holdout_split
from mstar_engine.data.synthetic import make_synthetic

__all__ = ["DEFAULT_NUM_EXAMPLES", "DataError", "MissingDependency", "load_dataset", "load_data", "load_file"]

#: Size of a synthetic dataset when ``data.num_examples`` is not set.
DEFAULT_NUM_EXAMPLES = 50_000


def load_dataset(data, seed: int) -> LoadedData:
    """Load the non-image dataset of the spec's ``[data]`` section ``data`` (a
    :class:`mstar_engine.spec.schema.Data`).

    * synthetic: ``make_synthetic(name, n, seed, data.dim)`` with ``n = data.num_examples or
      50000``;
    * offline (``quakes``, ``skye``): the whole set (``data.num_examples`` does not apply;
      ``data.dim``, if set, must equal the fixed dimension).

    Either is then split with ``holdout_split(x, data.holdout, seed)``. The full set is checked
    for NaN / infinite values first (:class:`DataError`), and a hold-out fraction that leaves no
    training example is refused. Image datasets are refused (use :func:`load_data`).
    """
    name = data.name
    info = DATASETS.get(name)
    if info is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    if info.is_image:
        raise ValueError(f"{name!r} is an image dataset: load it with load_data (or data.images.load_images)")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")

    if info.kind == "synthetic":
        n = DEFAULT_NUM_EXAMPLES if data.num_examples is None else int(data.num_examples)
        x = make_synthetic(name, n, seed, data.dim)
    elif info.kind == "file":
        x = load_file(expand_path(data.root))
    else:  # offline: the catalog has no other kind of non-image dataset
        if data.dim is not None and (int(data.dim),) != tuple(info.shape[:1]):
            raise ValueError(f"dataset {name!r} has fixed shape {info.shape}; data.dim cannot be set "
                             f"(got {data.dim})")
        x = load_offline(name)

    source = f"the file {str(expand_path(data.root))!r} (data.root)" if info.kind == "file" else ""
    check_finite(x, name, source or None)
    expected = info.event_shape(data.dim)
    if info.kind != "file" and tuple(x.shape[1:]) != tuple(expected):
        raise DataError(f"dataset {name!r}: examples have shape {tuple(x.shape[1:])}, the catalog "
                        f"expects {tuple(expected)}")
    train, held_out = holdout_split(x, data.holdout, seed)
    if train.shape[0] == 0:
        raise DataError(f"{source or f'dataset {name!r}'}: data.holdout = {data.holdout} holds out all {x.shape[0]} "
                        "examples and leaves none to train on; lower data.holdout")
    return LoadedData(name=name, train=train, held_out=held_out, domain=info.domain,
                      event_shape=tuple(int(s) for s in x.shape[1:]), source=source)


def load_file(path: Path) -> Tensor:
    """Examples from a user's file, one per row: ``.npy``, ``.npz`` (key ``x`` or its only array) or
    ``.csv`` (numbers, no header). A 1-D array is read as one scalar per example."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if "x" not in keys and len(keys) != 1:
                    raise DataError(f"{path} holds arrays {keys}: name the examples 'x' "
                                    "(np.savez(path, x=examples)) or store a single array")
                x = archive["x" if "x" in keys else keys[0]]
        elif suffix == ".csv":
            x = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        else:
            raise DataError(f"{path}: data.root must be a .npy, .npz or .csv file")
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as numbers: {exc}") from None
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path} holds {x.dtype} values; expected numbers")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim == 0 or x.shape[0] < 2:
        raise DataError(f"{path} holds {x.shape[0] if x.ndim else 0} example(s); at least 2 are needed "
                        "(one example per row)")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def load_data(data, seed: int) -> LoadedData:
    """The spec's dataset: :func:`mstar_engine.data.images.load_images` for image datasets (with
    labels), :func:`load_dataset` otherwise."""
    if DATASETS[data.name].is_image:
        return load_images(data, seed)
    return load_dataset(data, seed)
