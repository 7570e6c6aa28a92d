"""Load the dataset a spec names, split it, validate it, and serve shuffled batches.

* :func:`load_dataset` turns a spec's ``[data]`` section into a :class:`LoadedData` (train and
  held-out tensors, domain, event shape) for the synthetic and offline datasets; :func:`load_data`
  dispatches image datasets to :func:`mstar_engine.data.images.load_images`.
* :func:`check_for_family` checks the training data against a family's domain; the family's
  :class:`~mstar_engine.families.base.DomainError` propagates with its message.
* :func:`batches` is the endless, resumable stream of shuffled training batches.

Errors: :class:`DataError` (a ``ValueError``) for unusable data, :class:`MissingDependency` (an
``ImportError``) when an optional package that a dataset needs is not installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import attrs

import numpy as np
import torch
from torch import Tensor

from mstar_engine.data.catalog import DATASETS, expand_path
from mstar_engine.data.offline import DataError, MissingDependency, load_offline
from mstar_engine.data.splits import holdout_split
from mstar_engine.data.synthetic import make_synthetic

__all__ = [
    "DEFAULT_NUM_EXAMPLES",
    "DataError",
    "MissingDependency",
    "LoadedData",
    "load_dataset",
    "check_finite",
    "check_for_family",
    "batches",
    "epoch_permutation",
]

#: Size of a synthetic dataset when ``data.num_examples`` is not set.
DEFAULT_NUM_EXAMPLES = 50_000


@attrs.frozen(eq=False)
class LoadedData:
    """A dataset ready for training: ``train`` and ``held_out`` are float64 tensors of shape
    ``(n, *event_shape)`` (rows in their original order), ``domain`` the data domain (a key of
    :data:`mstar_engine.domains.DOMAINS`)."""

    name: str
    train: Tensor
    held_out: Tensor
    domain: str
    event_shape: tuple[int, ...]
    source: str = ""  # what messages call the data; default "dataset '<name>'" (a user's file: its path)

    @property
    def described(self) -> str:
        return self.source or f"dataset '{self.name}'"

    @property
    def num_train(self) -> int:
        return int(self.train.shape[0])

    @property
    def num_held_out(self) -> int:
        return int(self.held_out.shape[0])


def check_finite(x: Tensor, name: str, described: str | None = None) -> None:
    """Raise :class:`DataError` when any value of ``x`` is NaN or infinite, saying how many rows
    (examples) of how many are affected and which dataset (``described``: what to call the data
    instead of ``dataset '<name>'``)."""
    if x.numel() == 0:
        return
    bad_rows = ~torch.isfinite(x).reshape(x.shape[0], -1).all(dim=1)
    count = int(bad_rows.sum())
    if count:
        first = int(torch.nonzero(bad_rows)[0, 0])
        what = described or f"dataset {name!r}"
        raise DataError(f"{what}: {count} of {x.shape[0]} rows contain NaN or infinite values "
                        f"(first at row {first}); fix or drop those examples")


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
    elif info.kind == "offline":
        if data.dim is not None and (int(data.dim),) != tuple(info.shape[:1]):
            raise ValueError(f"dataset {name!r} has fixed shape {info.shape}; data.dim cannot be set "
                             f"(got {data.dim})")
        x = load_offline(name)
    else:  # pragma: no cover - the catalog only has the three kinds
        raise ValueError(f"dataset {name!r} has unknown kind {info.kind!r}")

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


def load_data(data, seed: int):
    """The spec's dataset: :func:`mstar_engine.data.images.load_images` for image datasets (with
    labels), :func:`load_dataset` otherwise."""
    if DATASETS[data.name].is_image:
        from mstar_engine.data.images import load_images
        return load_images(data, seed)
    return load_dataset(data, seed)


def check_for_family(loaded: LoadedData, family) -> None:
    """Check the training data against ``family``'s domain
    (``family.check_domain(train, what="dataset '<name>'")``, or the file's path for
    ``data.name = "file"``); the family's ``DomainError`` propagates unchanged. The held-out part
    is checked as well when it is not empty."""
    described = getattr(loaded, "described", f"dataset '{loaded.name}'")  # image sets: LoadedImages
    family.check_domain(loaded.train, what=described)
    if loaded.held_out.shape[0]:
        family.check_domain(loaded.held_out, what=f"{described} (held-out part)")


# ---------------------------------------------------------------------------- batches


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit torch seed mixed from ``(seed, epoch)`` by numpy's SeedSequence."""
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 32 | int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the ``n`` examples in epoch ``epoch``: ``torch.randperm(n)`` drawn from a CPU
    ``torch.Generator`` seeded from ``(seed, epoch)``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(_epoch_seed(seed, epoch))
    return torch.randperm(int(n), generator=gen)


def batches(x: Tensor, batch_size: int, seed: int, start_example: int = 0) -> Iterator[Tensor]:
    """Endless shuffled batches of the rows of ``x``.

    Semantics: the rows form one infinite *example stream*; its position ``k`` holds row
    ``epoch_permutation(n, seed, k // n)[k % n]``, i.e. every epoch is a fresh permutation of all
    ``n`` rows. The generator yields consecutive chunks of ``batch_size`` positions starting at
    ``start_example``: batch ``j`` holds positions ``start_example + j·batch_size`` up to (not
    including) ``start_example + (j+1)·batch_size``. Batches are always full; one that crosses an
    epoch end takes the rest of that epoch and the start of the next.

    The stream is a pure function of the position, so resuming a run that has consumed ``p``
    examples (``p = steps_done · batch_size``) with ``start_example = p`` yields exactly the
    batches the uninterrupted run would have yielded next. ``p`` need not be a multiple of
    ``batch_size``: the resumed stream then still continues the same example order, with batch
    boundaries shifted to start at ``p``.

    Arguments are checked at the call (not at the first ``next``). Indices are drawn on the CPU
    and the rows gathered on ``x``'s device.
    """
    batch_size, seed, start_example = check_stream(x, batch_size, seed, start_example, "batches", 1)
    return _stream(x, batch_size, seed, start_example)


def check_stream(x: Tensor, batch_size, seed, start_example, what: str, min_ndim: int) -> tuple[int, int, int]:
    """Validate the arguments of a batch stream; returns (batch_size, seed, start_example) as ints."""
    if x.ndim < min_ndim or x.shape[0] == 0:
        raise DataError(f"{what} needs at least one example, got a tensor of shape {tuple(x.shape)}")
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    seed, start_example = int(seed), int(start_example)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if start_example < 0:
        raise ValueError(f"start_example must be ≥ 0, got {start_example}")
    return batch_size, seed, start_example


def _stream(x: Tensor, batch_size: int, seed: int, start: int) -> Iterator[Tensor]:
    n = int(x.shape[0])
    epoch, offset = divmod(start, n)
    perm = epoch_permutation(n, seed, epoch)
    while True:
        parts = []
        need = batch_size
        while need:
            take = min(need, n - offset)
            parts.append(perm[offset:offset + take])
            offset += take
            need -= take
            if offset == n:
                epoch, offset = epoch + 1, 0
                perm = epoch_permutation(n, seed, epoch)
        idx = parts[0] if len(parts) == 1 else torch.cat(parts)
        yield x.index_select(0, idx.to(x.device))


def training_source(spec, data, batch_size: int, workers: int = 0,
                    pin_memory: bool = False) -> Callable[[int], Iterator]:
    """start_example -> iterator of training batches (x0, or (x0, labels) for a class-conditional
    image model), a pure function of the position. ``workers > 0`` builds the batches in that many
    DataLoader processes (batch j by worker j mod workers, yielded in order, so the stream is the
    same) and ``pin_memory`` pins them for asynchronous copies to a GPU. The source pickles, so
    workers may be spawned (macOS, or inside the processes of a multi-process run)."""
    images = DATASETS[spec.data.name].is_image
    labels = data.train_labels if images and spec.network.class_conditional else None
    source = _Source(data.train, labels, batch_size, spec.experiment.seed, images, spec.data.flip)
    if workers == 0 and not pin_memory:
        return source

    def loaded(start):
        from torch.utils.data import DataLoader
        return iter(DataLoader(_Sharded(source, start, batch_size), batch_size=None, num_workers=workers,
                               pin_memory=pin_memory, persistent_workers=workers > 0))
    return loaded


class _Source:
    """start_example -> iterator of training batches: :func:`batches`, or image batches (with
    labels and flips) as float64."""

    def __init__(self, x: Tensor, labels: Tensor | None, batch_size: int, seed: int, images: bool,
                 flip: bool) -> None:
        self.x, self.labels, self.batch_size, self.seed, self.images, self.flip = x, labels, batch_size, seed, images, flip

    def __call__(self, start: int) -> Iterator:
        if not self.images:
            return batches(self.x, self.batch_size, self.seed, start)
        return self._images(start)

    def _images(self, start: int) -> Iterator:
        from mstar_engine.data.images import image_batches
        for x, y in image_batches(self.x, self.labels, self.batch_size, self.seed, start, flip=self.flip):
            yield (x.to(torch.float64), y) if y is not None else x.to(torch.float64)


class Stream:
    """Batches by example position from ``source``, reading one iterator in order (so DataLoader
    workers stay alive) and starting a new one only when asked for another position."""

    def __init__(self, source: Callable[[int], Iterator]) -> None:
        self.source, self.iterator, self.position = source, None, -1

    def batch_at(self, position: int, batch_size: int):
        if position != self.position or self.iterator is None:
            self.iterator = self.source(position)
        self.position = position + batch_size
        return next(self.iterator)


class _Sharded(torch.utils.data.IterableDataset):
    """Batches start, start + B, ... of ``source``; in worker w of W, only batches j ≡ w (mod W)."""

    def __init__(self, source: Callable[[int], Iterator], start: int, batch_size: int) -> None:
        self.source, self.start, self.batch_size = source, start, batch_size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        j = w
        while True:
            yield next(iter(self.source(self.start + j * self.batch_size)))
            j += n
