"""Endless, resumable streams of shuffled training batches, and the training source built on them.

Semantics: the rows of a dataset form one infinite *example stream*; its position ``k`` holds row
``epoch_permutation(n, seed, k // n)[k % n]``, i.e. every epoch is a fresh permutation of all
``n`` rows. A stream started at ``start_example`` yields consecutive chunks of ``batch_size``
positions: batch ``j`` holds positions ``start_example + j·batch_size`` up to (not including)
``start_example + (j+1)·batch_size``. Batches are always full; one that crosses an epoch end takes
the rest of that epoch and the start of the next.

The stream is a pure function of the position, so resuming a run that has consumed ``p``
examples (``p = steps_done · batch_size``) with ``start_example = p`` yields exactly the batches
the uninterrupted run would have yielded next. ``p`` need not be a multiple of ``batch_size``: the
resumed stream then still continues the same example order, with batch boundaries shifted.

Image streams may flip images left-right: the image at position ``k`` is mirrored when coin
``k % n`` of epoch ``k // n`` comes up (``n`` fair coins from a generator seeded from
``(seed, epoch)``, independent of the order), so flips too are a pure function of the position.

Arguments are checked at the call (not at the first ``next``). Indices and coins are drawn on the
CPU and the rows gathered (and flipped) on the data's device.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mstar_engine.data.offline import DataError

_FLIP_TAG = 0xF11B


def _seeded(*parts: int) -> torch.Generator:
    """A CPU generator seeded with 63 bits mixed from ``parts`` by numpy's SeedSequence."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator(device="cpu")
    gen.manual_seed((int(state[0]) << 32 | int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF)
    return gen


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the ``n`` examples in epoch ``epoch``: ``torch.randperm(n)`` drawn from a CPU
    ``torch.Generator`` seeded from ``(seed, epoch)``."""
    return torch.randperm(int(n), generator=_seeded(seed, epoch))


def _flip_mask(n: int, seed: int, epoch: int) -> Tensor:
    """Which positions of epoch ``epoch`` are flipped: ``n`` fair coins."""
    return torch.randint(0, 2, (int(n),), generator=_seeded(seed, epoch, _FLIP_TAG)).bool()


def _apply_flips(x: Tensor, mask: Tensor) -> Tensor:
    """``x[i]`` mirrored left-right (last axis) where ``mask[i]`` is true."""
    mask = mask.to(device=x.device, dtype=torch.bool).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.where(mask, x.flip(-1), x)


def flip_batch(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flips: each image of ``x`` (``(n, ..., W)``) is mirrored along its last
    axis with probability ½, independently, the coin flips drawn from ``generator`` (``n`` draws of
    ``torch.randint(0, 2, ...)`` on the generator's device). Returns a new tensor; ``x`` is left
    unchanged. Flipped images are exact mirror images."""
    if x.ndim < 2:
        raise ValueError(f"flip_batch needs a batch of images, got a tensor of shape {tuple(x.shape)}")
    mask = torch.randint(0, 2, (int(x.shape[0]),), generator=generator, device=generator.device)
    return _apply_flips(x, mask.bool())


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


def _positions(n: int, batch_size: int, seed: int, start: int, flip: bool) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(row indices, flip coins or None) of each batch of the stream."""
    epoch, offset = divmod(start, n)
    perm = epoch_permutation(n, seed, epoch)
    coins = _flip_mask(n, seed, epoch) if flip else None
    while True:
        idx_parts, coin_parts = [], []
        need = batch_size
        while need:
            take = min(need, n - offset)
            idx_parts.append(perm[offset:offset + take])
            if flip:
                coin_parts.append(coins[offset:offset + take])
            offset += take
            need -= take
            if offset == n:
                epoch, offset = epoch + 1, 0
                perm = epoch_permutation(n, seed, epoch)
                coins = _flip_mask(n, seed, epoch) if flip else None
        yield (idx_parts[0] if len(idx_parts) == 1 else torch.cat(idx_parts)), (torch.cat(coin_parts) if flip else None)


def batches(x: Tensor, batch_size: int, seed: int, start_example: int = 0) -> Iterator[Tensor]:
    """Endless shuffled batches of the rows of ``x`` (see the module docstring)."""
    batch_size, seed, start_example = check_stream(x, batch_size, seed, start_example, "batches", 1)
    return (x.index_select(0, idx.to(x.device))
            for idx, _ in _positions(int(x.shape[0]), batch_size, seed, start_example, False))


def image_batches(x: Tensor, labels: Tensor | None, batch_size: int, seed: int, start_example: int = 0,
                  flip: bool = False) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Endless shuffled batches ``(images, labels)``: the example order of :func:`batches` with the
    same ``(batch_size, seed, start_example)``, optionally flipped (see the module docstring).
    ``labels`` may be ``None`` (batches then carry ``None``)."""
    batch_size, seed, start_example = check_stream(x, batch_size, seed, start_example, "image_batches", 2)
    if labels is not None and tuple(labels.shape) != (int(x.shape[0]),):
        raise ValueError(f"labels must have shape ({x.shape[0]},) to match the images, got {tuple(labels.shape)}")
    return _image_stream(x, labels, batch_size, seed, start_example, bool(flip))


def _image_stream(x: Tensor, labels: Tensor | None, batch_size: int, seed: int, start: int,
                  flip: bool) -> Iterator[tuple[Tensor, Tensor | None]]:
    for idx, coins in _positions(int(x.shape[0]), batch_size, seed, start, flip):
        images = x.index_select(0, idx.to(x.device))
        if flip:
            images = _apply_flips(images, coins)
        yield images, None if labels is None else labels.index_select(0, idx.to(labels.device))


def training_source(data, batch_size: int, seed: int, *, labelled: bool = False, flip: bool = False,
                    workers: int = 0, pin_memory: bool = False) -> Callable[[int], Iterator]:
    """start_example -> iterator of training batches of the :class:`LoadedData` ``data`` (x0, or
    (x0, labels) for a class-conditional image model, ``labelled``; images, the data with labels,
    are flipped when ``flip``), a pure function of the position. ``workers > 0`` builds the batches in that many DataLoader processes (batch j by
    worker j mod workers, yielded in order, so the stream is the same) and ``pin_memory`` pins them
    for asynchronous copies to a GPU. The source pickles, so workers may be spawned (macOS, or
    inside the processes of a multi-process run)."""
    images = data.train_labels is not None
    labels = data.train_labels if images and labelled else None
    source = _Source(data.train, labels, batch_size, seed, images, flip)
    if workers == 0 and not pin_memory:
        return source

    def loaded(start):
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


class _Sharded(IterableDataset):
    """Batches start, start + B, ... of ``source``; in worker w of W, only batches j ≡ w (mod W)."""

    def __init__(self, source: Callable[[int], Iterator], start: int, batch_size: int) -> None:
        self.source, self.start, self.batch_size = source, start, batch_size

    def __iter__(self):
        info = get_worker_info()
        w, n = (info.id, info.num_workers) if info is not None else (0, 1)
        j = w
        while True:
            yield next(iter(self.source(self.start + j * self.batch_size)))
            j += n
