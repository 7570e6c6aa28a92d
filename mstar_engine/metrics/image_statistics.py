"""Inception statistics of a set of real images, computed once: pool3 mean and covariance (the FID
reference), the pool3 features themselves (float32, at most :data:`KEPT_FEATURES` rows: what KID
and precision/recall compare with) and the Inception score, cached on disk (``inception/`` in mstar's cache folder, see
:mod:`mstar_engine.util.cache`) under a key made of the images' bytes, their shape and the weights
file. A 50,000-image reference costs two passes of 50,000 images through Inception; every later
evaluation of any run on the same data reads it back instead.

Published FIDs are often computed against standard statistics files; :func:`load_reference` reads
one in pytorch-fid's format (an ``.npz`` with ``mu`` and ``sigma``), and the cache files are in
that format too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from mstar_engine.util import cache
from mstar_engine.metrics.frechet import activation_statistics
from mstar_engine.metrics.inception import InceptionFeatures, activations, inception_score

#: Bumped whenever the pipeline from images to features changes (resize, scaling, network).
VERSION = 2
FEATURES = 2048
#: Rows of pool3 features kept in a cache entry (the first ones): 10,000 × 2048 float32 is 82 MB.
KEPT_FEATURES = 10_000


class ReferenceStatisticsError(ValueError):
    """A reference statistics file that is missing or not in pytorch-fid's format."""


def image_statistics(net: InceptionFeatures, images: torch.Tensor, weights: Path, *, batch_size: int = 100,
                     use_cache: bool = True) -> dict[str, np.ndarray]:
    """``mu``, ``sigma`` (pool3), ``features`` (the first :data:`KEPT_FEATURES` rows of pool3,
    float32) and ``inception_score`` of ``images`` (in [0, 1]), from the cache when the same images
    went through the same weights file before."""
    key = {"what": "inception-statistics", "images": digest(images), "shape": tuple(images.shape),
           "weights": _file_identity(weights), "pipeline": VERSION}

    def build() -> dict[str, np.ndarray]:
        pool, logits = activations(net, images, batch_size)
        mu, sigma = activation_statistics(pool)
        score = inception_score(logits)[0] if logits is not None else np.nan  # weights without logits: FID only
        return {"mu": mu, "sigma": sigma, "features": pool[:KEPT_FEATURES].astype(np.float32),
                "inception_score": np.array(score)}
    return cache.cached(key, build, use_cache, folder="inception")


def load_reference(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) from a pytorch-fid statistics file (``np.savez(path, mu=..., sigma=...)``)."""
    path = Path(path).expanduser()
    fix = ("give an .npz with arrays mu (2048,) and sigma (2048, 2048), as written by "
           "python -m pytorch_fid --save-stats, or unset eval.fid_reference to use the training images")
    if not path.is_file():
        raise ReferenceStatisticsError(f"FID reference statistics not found at {path}: {fix}")
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise ReferenceStatisticsError(f"cannot read FID reference statistics from {path} ({exc}): {fix}") from None
    if mu.shape != (FEATURES,) or sigma.shape != (FEATURES, FEATURES):
        raise ReferenceStatisticsError(f"{path} holds mu {mu.shape} and sigma {sigma.shape}, not the pool3 "
                                       f"statistics of Inception: {fix}")
    return mu, sigma


def digest(images: torch.Tensor) -> str:
    """SHA-256 of the images' values (float32, C order) and shape."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _file_identity(path: Path) -> str:
    """Where the weights are, their size and modification time: a replaced file is a new key."""
    stat = Path(path).stat()
    return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
