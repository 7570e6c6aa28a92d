"""A loaded dataset (:class:`LoadedData`, one class for every kind of data) and its checks."""
from __future__ import annotations

import attrs
import torch
from torch import Tensor

from mstar_engine.data.offline import DataError


@attrs.frozen(eq=False)
class LoadedData:
    """A dataset ready for training: ``train`` and ``held_out`` are tensors of shape
    ``(n, *event_shape)`` (rows in their original order; float64, or float32 images in
    ``data.range``), ``domain`` the data domain. Image datasets also carry their class labels (the
    original indices, not renumbered by ``data.classes``)."""

    name: str
    train: Tensor
    held_out: Tensor
    domain: str
    event_shape: tuple[int, ...]
    source: str = ""  # what messages call the data; default "dataset '<name>'" (a user's file: its path)
    train_labels: Tensor | None = None     # image datasets: int64 class labels, shape (n,)
    held_out_labels: Tensor | None = None
    num_classes: int = 0                   # classes of the whole dataset (labels lie in 0..num_classes-1)
    class_names: tuple[str, ...] = ()      # one name per class index when the source has them

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


def check_for_family(loaded: LoadedData, family) -> None:
    """Check the training data against ``family``'s domain
    (``family.check_domain(train, what="dataset '<name>'")``, or the file's path for
    ``data.name = "file"``); the family's ``DomainError`` propagates unchanged. The held-out part
    is checked as well when it is not empty."""
    described = loaded.described
    family.check_domain(loaded.train, what=described)
    if loaded.held_out.shape[0]:
        family.check_domain(loaded.held_out, what=f"{described} (held-out part)")
