"""Image datasets: load, split, filter, rescale, and serve (optionally flipped) resumable batches.

:func:`load_images` turns a spec's ``[data]`` section (a :class:`mstar_engine.spec.schema.Data`
naming an image dataset of :data:`mstar_engine.data.catalog.DATASETS`) into a
:class:`~mstar_engine.data.dataset.LoadedData`: float32 image tensors ``(N, C, H, W)`` with int64 class labels.

Sources
-------
``digits``
    scikit-learn's ``load_digits()`` (1797 grey 8×8 images, values 0..16, 10 classes); built in,
    no download. scikit-learn is optional (``pip install 'mstar[data]'``); without it
    :class:`MissingDependency` is raised. Split into train / held-out by
    ``holdout_split(·, data.holdout, seed)``.
``mnist``, ``cifar10``, ``cifar100``
    torchvision's datasets read from ``data.root``. The official training split is the training
    set and the official test split is the held-out set (``data.holdout`` does not apply).
    Nothing is downloaded unless ``data.download`` is true; a missing dataset raises
    :class:`DataError` naming the expected layout under ``data.root``.
``image-folder``
    ``torchvision.datasets.ImageFolder(data.root)``: one sub-folder per class (class index =
    sorted folder order, as ImageFolder assigns it), every image converted to RGB. Each image is
    resized so that its shorter side is ``data.image_size`` (default 64) and then cropped to a
    square by ``data.crop``: ``"center"``, ``"random"`` (a fixed crop per image, drawn once at load
    time from a generator seeded by ``seed``, so it is deterministic) or ``"none"`` (resize
    straight to ``image_size × image_size``, distorting the aspect ratio). Split like ``digits``.

Every resize is bilinear (``torch.nn.functional.interpolate``, ``align_corners=False``), with
antialiasing when an axis is shrunk. ``digits``, ``mnist`` and the CIFARs are square, so they are
only resized (when ``data.image_size`` differs from the native size); ``data.crop`` does not
affect them.

Order of operations
-------------------
1. load the full training set (and the official test set), values in [0, 1];
2. split train / held-out (``digits``, ``image-folder``: ``holdout_split`` with ``seed``);
3. keep only the labels in ``data.classes`` (both parts; labels keep their original values);
4. keep ``data.num_examples`` training images (the first N of a seeded permutation, then in their
   original order; all of them when there are fewer);
5. resize, then map the values to ``data.range``;
6. check that every value is finite.

Because the split (2) happens before the class filter (3), loading the same data without
``classes`` gives a held-out set whose rows for the kept classes are exactly the filtered held-out
set (useful for anomaly detection, where held-out images of the other classes are the anomalies).

Value range
-----------
``"symmetric"``: ``x ↦ 2x − 1``, values in [−1, 1] (the usual Gaussian-diffusion convention).

``"unit"``: the *open* interval (0, 1), for families whose support excludes the end points
(Beta, Kumaraswamy, ...; their log-densities are infinite at 0 and 1). The [0, 1] values are
squeezed into ``[ε, 1 − ε]`` with ``ε = 1/(2·256) = 1/512``: ``x ↦ ε + (1 − 2ε)·x``. For 8-bit
images this sends pixel value ``k ∈ {0, ..., 255}`` exactly to ``(k + ½)/256``, the centre of its
quantisation bin ``[k/256, (k+1)/256]``, so no value is lost and none reaches 0 or 1. ``digits``
(17 levels) is squeezed by the same formula.
"""
from __future__ import annotations

import importlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mstar_engine.data.catalog import DATASETS, DatasetInfo, expand_path
from mstar_engine.data.offline import DataError, MissingDependency
from mstar_engine.data.dataset import LoadedData, check_finite
from mstar_engine.data.splits import holdout_split

__all__ = ["UNIT_EPS", "load_images", "to_range"]

#: Margin of the "unit" range: values lie in [UNIT_EPS, 1 − UNIT_EPS] (half an 8-bit bin).
UNIT_EPS = 1.0 / (2 * 256)

# Tags that separate the seeded streams derived from the run seed.
_SUBSET_TAG = 0x5B5E7
_CROP_TAG = 0xC4019

_TORCHVISION = {"mnist": "MNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


# ---------------------------------------------------------------------------- loading


def load_images(data, seed: int) -> LoadedData:
    """Load the image dataset of the spec's ``[data]`` section ``data`` (see the module docstring
    for the recipe). Raises :class:`DataError` for missing or unusable data (with the expected
    layout under ``data.root``), :class:`MissingDependency` when scikit-learn is needed and not
    installed, ``ValueError`` for a dataset that is not an image dataset or a negative seed."""
    name = data.name
    info = DATASETS.get(name)
    if info is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    if not info.is_image:
        raise ValueError(f"dataset {name!r} is not an image dataset; load it with load_dataset")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    size = int(data.image_size) if data.image_size is not None else int(info.shape[-1])
    if size < 1:
        raise ValueError(f"image_size must be positive, got {size}")

    class_names: tuple[str, ...] = ()
    if name in _TORCHVISION:
        (train, train_y), (held, held_y) = _torchvision(info, data)
    else:  # digits and image folders: split here
        if name == "digits":
            x, y = _digits()
        else:  # image-folder: the catalog has no other image dataset
            x, y, class_names = _image_folder(info, data, size, seed)
        train_idx, held_idx = holdout_split(torch.arange(x.shape[0]), data.holdout, seed)
        train, train_y = x[train_idx], y[train_idx]
        held, held_y = x[held_idx], y[held_idx]
    num_classes = len(class_names) if name == "image-folder" else info.num_classes

    if data.classes is not None:
        wanted = sorted({int(k) for k in data.classes})
        absent = [k for k in wanted if not 0 <= k < num_classes]
        if absent:
            names = (", ".join(f"{i} ({n})" for i, n in enumerate(class_names)) if class_names
                     else f"0..{num_classes - 1}")
            raise DataError(f"dataset {name!r}: class label(s) {', '.join(map(str, absent))} in data.classes "
                            f"do not exist; valid labels: {names}")
        keep = torch.tensor(wanted, dtype=torch.int64)
        tr, ho = torch.isin(train_y, keep), torch.isin(held_y, keep)
        train, train_y, held, held_y = train[tr], train_y[tr], held[ho], held_y[ho]

    if data.num_examples is not None and int(data.num_examples) < train.shape[0]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SUBSET_TAG]))
        chosen = np.sort(rng.permutation(train.shape[0])[: int(data.num_examples)])
        idx = torch.as_tensor(chosen, dtype=torch.int64)
        train, train_y = train[idx], train_y[idx]

    if train.shape[0] == 0:
        raise DataError(f"dataset {name!r}: no training images left "
                        f"(data.classes = {data.classes}, data.holdout = {data.holdout}); "
                        "keep more classes or lower data.holdout")

    train, held = _resize_square(train, size), _resize_square(held, size)
    train, held = to_range(train, data.range), to_range(held, data.range)
    check_finite(train, name)
    check_finite(held, f"{name} (held-out part)")
    return LoadedData(
        name=name,
        train=train.contiguous(),
        train_labels=train_y.to(torch.int64).contiguous(),
        held_out=held.contiguous(),
        held_out_labels=held_y.to(torch.int64).contiguous(),
        num_classes=int(num_classes),
        event_shape=tuple(int(s) for s in train.shape[1:]),
        domain=info.domain_for(data.range),
        class_names=tuple(class_names),
    )


def to_range(x: Tensor, data_range: str) -> Tensor:
    """Map values in [0, 1] to ``data_range``: ``"symmetric"`` → [−1, 1] (``2x − 1``), ``"unit"``
    → [ε, 1 − ε] ⊂ (0, 1) with ε = :data:`UNIT_EPS` = 1/512 (``ε + (1 − 2ε)x``; see the module
    docstring)."""
    if data_range == "symmetric":
        return x * 2.0 - 1.0
    if data_range == "unit":
        return x * (1.0 - 2.0 * UNIT_EPS) + UNIT_EPS
    raise ValueError(f"unknown data.range {data_range!r}; use 'symmetric' or 'unit'")


def _uint8_to_unit(x: Tensor) -> Tensor:
    """uint8 → float32 in [0, 1], converted in chunks (no float64 copy of a large set)."""
    out = torch.empty(x.shape, dtype=torch.float32)
    step = 8192
    for i in range(0, x.shape[0], step):
        out[i:i + step] = x[i:i + step].to(torch.float32) / 255.0
    return out


def _resize(x: Tensor, height: int, width: int) -> Tensor:
    """Bilinear resize of a float batch ``(n, C, h, w)``; antialiased when an axis shrinks."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if (h, w) == (height, width):
        return x
    shrink = height < h or width < w
    out = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp_(0.0, 1.0)


def _resize_square(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[0] == 0:
        return x.new_zeros((0, x.shape[1], size, size))
    step = 4096
    return torch.cat([_resize(x[i:i + step], size, size) for i in range(0, x.shape[0], step)])


def _digits() -> tuple[Tensor, Tensor]:
    try:
        datasets = importlib.import_module("sklearn.datasets")
    except ImportError as err:
        raise MissingDependency(
            "dataset 'digits' needs the Python package 'sklearn' (scikit-learn), which is not installed: "
            "install it with pip install 'mstar[data]'") from err
    bunch = datasets.load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return x, y


def _download_hint(info: DatasetInfo) -> str:
    return ("; set data.download = true (or pass mstar run --download) to let torchvision fetch it "
            "into data.root" if info.downloadable else "")


def _torchvision(info: DatasetInfo, data) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION[info.name])
    if data.download:
        if data.root is None:
            raise DataError(f"dataset {info.name!r}: data.download = true needs data.root, the folder "
                            f"torchvision downloads into (it will hold {info.layout})")
    else:
        problem = info.missing_files(data.root)
        if problem:
            raise DataError(problem + _download_hint(info))
    root = str(expand_path(data.root))
    parts = []
    for train in (True, False):
        try:
            ds = cls(root=root, train=train, download=bool(data.download))
        except (RuntimeError, OSError, ValueError) as exc:
            what = "download or read" if data.download else "read"
            raise DataError(f"cannot {what} {info.name} from {root!r}: {exc}; expected {info.layout}"
                            + ("" if data.download else _download_hint(info))) from None
        images = torch.as_tensor(np.asarray(ds.data))
        if images.ndim == 3:                       # MNIST: (n, H, W)
            images = images.unsqueeze(1)
        else:                                      # CIFAR: (n, H, W, C)
            images = images.permute(0, 3, 1, 2)
        labels = torch.as_tensor(np.asarray(ds.targets, dtype=np.int64))
        if images.dtype != torch.uint8 or images.shape[1:] != info.shape or labels.shape != images.shape[:1]:
            raise DataError(f"dataset {info.name!r} under {root!r}: unexpected contents (images "
                            f"{tuple(images.shape)} {images.dtype}, labels {tuple(labels.shape)}); expected "
                            f"uint8 images of shape {info.shape} and one label each")
        parts.append((_uint8_to_unit(images.contiguous()), labels))
    return parts[0], parts[1]


def _image_folder(info: DatasetInfo, data, size: int, seed: int) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    import torchvision
    from torchvision.transforms.functional import pil_to_tensor

    problem = info.missing_files(data.root)
    if problem:
        raise DataError(problem)
    root = expand_path(data.root)
    try:
        ds = torchvision.datasets.ImageFolder(str(root))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"image-folder {str(root)!r}: {exc}; expected {info.layout}") from None
    if not ds.samples:
        raise DataError(f"no images under {str(root)!r}; expected {info.layout}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, _CROP_TAG]))
    images = torch.empty((len(ds.samples), 3, size, size), dtype=torch.float32)
    labels = torch.empty(len(ds.samples), dtype=torch.int64)
    for i, (path, label) in enumerate(ds.samples):
        try:
            img = ds.loader(path)                          # PIL image converted to RGB
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise DataError(f"cannot read image {path!r}: {exc}") from None
        x = _uint8_to_unit(pil_to_tensor(img).unsqueeze(0))
        images[i] = _resize_and_crop(x, size, data.crop, rng)[0]
        labels[i] = int(label)
    return images, labels, tuple(ds.classes)


def _resize_and_crop(x: Tensor, size: int, crop: str, rng: np.random.Generator) -> Tensor:
    """One image ``(1, C, h, w)`` → ``(1, C, size, size)``: ``crop = "none"`` resizes to the
    square; otherwise the shorter side becomes ``size`` (the longer ``int(size · long / short)``,
    as torchvision's ``Resize``) and a ``size × size`` window is cut, centred (offset
    ``round((L − size) / 2)``, as ``CenterCrop``) or at an offset drawn uniformly from ``rng``."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if crop == "none":
        return _resize(x, size, size)
    if crop not in ("center", "random"):
        raise ValueError(f"unknown data.crop {crop!r}; use 'center', 'random' or 'none'")
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    x = _resize(x, nh, nw)
    if crop == "center":
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    else:
        top, left = int(rng.integers(0, nh - size + 1)), int(rng.integers(0, nw - size + 1))
    return x[..., top:top + size, left:left + size]
