"""Image datasets (issue #5): digits, MNIST / CIFAR from fake local roots, image folders, ranges,
class filters, hold-out, flips and resumable image batches. Nothing here downloads anything."""
from __future__ import annotations

import itertools
import os
import pickle
import struct
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchvision
from mstar_engine.data.catalog import DATASETS
from mstar_engine.data.dataset import LoadedData
from mstar_engine.data.images import UNIT_EPS, load_images, to_range
from mstar_engine.data.stream import batches, flip_batch, image_batches
from mstar_engine.data.offline import DataError, MissingDependency
from mstar_engine.data.splits import holdout_split
from mstar_engine.spec.schema import Data

PIL = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt by torchvision to fetch a file fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to download: {args} {kwargs}")

    for module in (torchvision.datasets.mnist, torchvision.datasets.cifar, torchvision.datasets.utils):
        for fn in ("download_and_extract_archive", "download_url"):
            if hasattr(module, fn):
                monkeypatch.setattr(module, fn, refuse)


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


# ---------------------------------------------------------------------------- digits


def test_digits_symmetric_shapes_labels_and_recipe(sk_digits):
    images, target = sk_digits
    loaded = load_images(Data(name="digits", holdout=0.25), seed=3)
    assert isinstance(loaded, LoadedData)
    assert loaded.name == "digits" and loaded.num_classes == 10
    assert loaded.event_shape == (1, 8, 8) and loaded.domain == "real"
    held = round(1797 * 0.25)
    assert loaded.train.shape == (1797 - held, 1, 8, 8) and loaded.held_out.shape == (held, 1, 8, 8)
    assert loaded.num_train == 1797 - held and loaded.num_held_out == held
    assert loaded.train.dtype == torch.float32 and loaded.train_labels.dtype == torch.int64
    assert loaded.train_labels.shape == (1797 - held,) and loaded.held_out_labels.shape == (held,)
    assert loaded.train.min() == -1.0 and loaded.train.max() == 1.0
    # exactly the documented recipe: holdout_split(seed) of the sklearn images, values 2·v/16 − 1
    x = torch.from_numpy(images).float().unsqueeze(1) / 16 * 2 - 1
    y = torch.from_numpy(target).long()
    train_idx, held_idx = holdout_split(torch.arange(1797), 0.25, 3)
    torch.testing.assert_close(loaded.train, x[train_idx], rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.held_out, x[held_idx], rtol=0, atol=1e-6)
    assert torch.equal(loaded.train_labels, y[train_idx]) and torch.equal(loaded.held_out_labels, y[held_idx])
    assert set(loaded.train_labels.tolist()) == set(range(10))


def test_digits_unit_range_is_open_interval(sk_digits):
    loaded = load_images(Data(name="digits", range="unit"), seed=0)
    assert loaded.domain == "unit-box" and loaded.domain == DATASETS["digits"].domain_for("unit")
    assert UNIT_EPS == 1 / 512
    assert loaded.train.min().item() == UNIT_EPS and loaded.train.max().item() == 1 - UNIT_EPS
    assert (loaded.held_out > 0).all() and (loaded.held_out < 1).all()
    levels = {round(UNIT_EPS + (1 - 2 * UNIT_EPS) * v / 16, 6) for v in range(17)}
    assert {round(v, 6) for v in loaded.train.unique().tolist()} <= levels
    # symmetric and unit are the same images, affinely mapped
    sym = load_images(Data(name="digits"), seed=0)
    torch.testing.assert_close((sym.train + 1) / 2 * (1 - 2 * UNIT_EPS) + UNIT_EPS, loaded.train,
                               rtol=0, atol=1e-6)


def test_to_range_8bit_bin_centres():
    k = torch.arange(256, dtype=torch.float32)
    torch.testing.assert_close(to_range(k / 255, "unit"), (k + 0.5) / 256, rtol=0, atol=1e-7)
    torch.testing.assert_close(to_range(k / 255, "symmetric"), k / 255 * 2 - 1)
    with pytest.raises(ValueError, match="range"):
        to_range(k, "zero-one")


def test_digits_resized_to_16():
    loaded = load_images(Data(name="digits", image_size=16, holdout=0.1), seed=1)
    native = load_images(Data(name="digits", holdout=0.1), seed=1)
    assert loaded.train.shape == (native.num_train, 1, 16, 16) and loaded.event_shape == (1, 16, 16)
    assert loaded.held_out.shape == (native.num_held_out, 1, 16, 16)
    assert torch.equal(loaded.train_labels, native.train_labels)
    expected = F.interpolate((native.train + 1) / 2, size=(16, 16), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(loaded.train, expected, rtol=0, atol=1e-5)
    assert loaded.train.min() >= -1 and loaded.train.max() <= 1
    # downsampling is antialiased (a plain bilinear resize would differ)
    small = load_images(Data(name="digits", image_size=4, holdout=0.1), seed=1)
    anti = F.interpolate((native.train + 1) / 2, size=(4, 4), mode="bilinear", antialias=True) * 2 - 1
    torch.testing.assert_close(small.train, anti, rtol=0, atol=1e-5)


def test_digits_class_filter_and_split_consistency():
    full = load_images(Data(name="digits", holdout=0.2), seed=5)
    part = load_images(Data(name="digits", holdout=0.2, classes=[7, 3]), seed=5)
    assert set(part.train_labels.tolist()) == {3, 7} and set(part.held_out_labels.tolist()) == {3, 7}
    assert part.num_classes == 10  # labels keep their original values
    keep_tr = torch.isin(full.train_labels, torch.tensor([3, 7]))
    keep_ho = torch.isin(full.held_out_labels, torch.tensor([3, 7]))
    # split first, filter second: the filtered parts are exactly subsets of the unfiltered ones
    assert torch.equal(part.train, full.train[keep_tr]) and torch.equal(part.held_out, full.held_out[keep_ho])
    assert torch.equal(part.held_out_labels, full.held_out_labels[keep_ho])


def test_digits_unknown_class_names_valid_labels():
    with pytest.raises(DataError, match=r"12.*valid labels: 0\.\.9"):
        load_images(Data(name="digits", classes=[1, 12]), seed=0)


def test_digits_num_examples_seeded_subset():
    full = load_images(Data(name="digits"), seed=2)
    a = load_images(Data(name="digits", num_examples=100), seed=2)
    b = load_images(Data(name="digits", num_examples=150), seed=2)
    c = load_images(Data(name="digits", num_examples=100), seed=4)
    assert a.train.shape[0] == 100 and a.train_labels.shape == (100,)
    assert torch.equal(a.held_out, full.held_out)  # the held-out part is not truncated
    rows = {tuple(r.flatten().tolist()) for r in full.train}
    assert all(tuple(r.flatten().tolist()) in rows for r in a.train)
    b_rows = {tuple(r.flatten().tolist()) for r in b.train}
    assert all(tuple(r.flatten().tolist()) in b_rows for r in a.train)  # nested: first N of one permutation
    assert not torch.equal(a.train, full.train[:100])  # shuffled, not the first 100 rows
    c_full = load_images(Data(name="digits"), seed=4)
    assert not torch.equal(c.train, c_full.train[:100])
    more = load_images(Data(name="digits", num_examples=10_000), seed=2)
    assert torch.equal(more.train, full.train)


def test_digits_deterministic_under_seed():
    d = Data(name="digits", holdout=0.3, num_examples=500)
    a, b, c = load_images(d, 9), load_images(d, 9), load_images(d, 10)
    assert torch.equal(a.train, b.train) and torch.equal(a.held_out, b.held_out)
    assert torch.equal(a.train_labels, b.train_labels)
    assert not torch.equal(a.held_out, c.held_out)


def test_holdout_sizes_and_zero_holdout():
    for frac in (0.0, 0.1, 0.5):
        loaded = load_images(Data(name="digits", holdout=frac), seed=0)
        assert loaded.num_held_out == round(1797 * frac)
        assert loaded.num_train + loaded.num_held_out == 1797
    empty = load_images(Data(name="digits", holdout=0.0), seed=0)
    assert empty.held_out.shape == (0, 1, 8, 8) and empty.held_out_labels.shape == (0,)


def test_digits_missing_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingDependency, match=r"pip install 'mstar\[data\]'"):
        load_images(Data(name="digits"), seed=0)


def test_not_an_image_dataset_and_bad_seed():
    with pytest.raises(ValueError, match="not an image dataset"):
        load_images(Data(name="gaussian-mixture"), seed=0)
    with pytest.raises(ValueError, match="seed"):
        load_images(Data(name="digits"), seed=-1)


def test_nan_is_refused(monkeypatch):
    from mstar_engine.data import images as images_mod

    real = images_mod._digits

    def poisoned():
        x, y = real()
        x[5, 0, 2, 2] = float("nan")
        return x, y

    monkeypatch.setattr(images_mod, "_digits", poisoned)
    with pytest.raises(DataError, match="NaN"):
        load_images(Data(name="digits", holdout=0.0), seed=0)


# ---------------------------------------------------------------------------- MNIST / CIFAR


def _write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {"train": (rng.integers(0, 256, (12, 28, 28)), np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 3])),
              "t10k": (rng.integers(0, 256, (5, 28, 28)), np.array([3, 1, 4, 1, 5]))}
    for split, (images, labels) in arrays.items():
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return tmp_path, arrays


def test_mnist_from_fake_root(mnist_root):
    root, arrays = mnist_root
    loaded = load_images(Data(name="mnist", root=str(root), holdout=0.5), seed=0)
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["t10k"]
    assert loaded.event_shape == (1, 28, 28) and loaded.num_classes == 10
    assert loaded.train.shape == (12, 1, 28, 28) and loaded.held_out.shape == (5, 1, 28, 28)  # holdout ignored
    expect = torch.from_numpy(train_x).float().unsqueeze(1) / 255 * 2 - 1
    torch.testing.assert_close(loaded.train, expect, rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.held_out, torch.from_numpy(test_x).float().unsqueeze(1) / 255 * 2 - 1,
                               rtol=0, atol=1e-6)
    assert loaded.train_labels.tolist() == train_y.tolist() and loaded.held_out_labels.tolist() == test_y.tolist()
    # num_examples: a seeded choice of rows, kept in their original order
    sub = load_images(Data(name="mnist", root=str(root), num_examples=5), seed=0)
    rows = [next(i for i in range(12) if torch.equal(r, loaded.train[i])) for r in sub.train]
    assert rows == sorted(set(rows)) and len(rows) == 5 and rows != [0, 1, 2, 3, 4]
    assert sub.train_labels.tolist() == [int(train_y[i]) for i in rows]

    unit = load_images(Data(name="mnist", root=str(root), range="unit", image_size=14, classes=[3], num_examples=2),
                       seed=0)
    assert unit.train.shape == (2, 1, 14, 14) and unit.train_labels.tolist() == [3, 3]
    assert unit.held_out.shape == (1, 1, 14, 14) and unit.held_out_labels.tolist() == [3]
    assert unit.domain == "unit-box" and unit.train.min() > 0 and unit.train.max() < 1
    native = load_images(Data(name="mnist", root=str(root), range="unit", classes=[3]), seed=0)
    assert native.train.shape[0] == 3  # labels 3 at rows 3, 10, 11
    # 8-bit pixel k ↦ (k + ½)/256
    torch.testing.assert_close(native.held_out, (torch.from_numpy(test_x[[0]]).float().unsqueeze(1) + 0.5) / 256,
                               rtol=0, atol=1e-6)


def test_mnist_missing_root_names_layout_and_download(tmp_path, monkeypatch):
    calls = []

    def fake_download(self):
        calls.append(self.root)
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    layout = DATASETS["mnist"].layout
    with pytest.raises(DataError) as err:
        load_images(Data(name="mnist", root=str(tmp_path / "nowhere")), seed=0)
    assert layout in str(err.value) and "data.download = true" in str(err.value) and "--download" in str(err.value)
    with pytest.raises(DataError, match="MNIST/raw/train-images-idx3-ubyte") as err:
        load_images(Data(name="mnist", root=str(tmp_path)), seed=0)
    assert "--download" in str(err.value)
    with pytest.raises(DataError, match="set data.root"):
        load_images(Data(name="mnist"), seed=0)
    assert calls == []  # never downloads without data.download
    with pytest.raises(DataError, match="network unreachable"):
        load_images(Data(name="mnist", root=str(tmp_path), download=True), seed=0)
    assert calls == [str(tmp_path)]
    with pytest.raises(DataError, match="needs data.root"):
        load_images(Data(name="mnist", download=True), seed=0)


def _cifar_images(rng, n):
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def cifar_integrity(monkeypatch):
    """The fake files have the right format but not the real md5s."""
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar10_from_fake_root(tmp_path, cifar_integrity):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_imgs, train_labels = [], []
    for b in range(1, 6):
        imgs, labels = _cifar_images(rng, 2), [int(v) for v in rng.integers(0, 10, 2)]
        _pickle(folder / f"data_batch_{b}", {"data": imgs.reshape(2, -1), "labels": labels})
        train_imgs.append(imgs)
        train_labels += labels
    test_imgs = _cifar_images(rng, 3)
    _pickle(folder / "test_batch", {"data": test_imgs.reshape(3, -1), "labels": [9, 0, 4]})
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})

    loaded = load_images(Data(name="cifar10", root=str(tmp_path)), seed=0)
    assert loaded.event_shape == (3, 32, 32) and loaded.num_classes == 10
    expect = torch.from_numpy(np.concatenate(train_imgs)).float() / 255 * 2 - 1  # CHW kept channel-first
    torch.testing.assert_close(loaded.train, expect, rtol=0, atol=1e-6)
    torch.testing.assert_close(loaded.held_out, torch.from_numpy(test_imgs).float() / 255 * 2 - 1, rtol=0, atol=1e-6)
    assert loaded.train_labels.tolist() == train_labels and loaded.held_out_labels.tolist() == [9, 0, 4]
    small = load_images(Data(name="cifar10", root=str(tmp_path), image_size=16, range="unit"), seed=0)
    assert small.train.shape == (10, 3, 16, 16) and small.held_out.shape == (3, 3, 16, 16)


def test_cifar100_from_fake_root(tmp_path, cifar_integrity):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = _cifar_images(rng, 4)
    _pickle(folder / "train", {"data": train.reshape(4, -1), "fine_labels": [99, 0, 50, 99], "coarse_labels": [0] * 4})
    _pickle(folder / "test", {"data": _cifar_images(rng, 2).reshape(2, -1), "fine_labels": [1, 99],
                              "coarse_labels": [0, 0]})
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    loaded = load_images(Data(name="cifar100", root=str(tmp_path), classes=[99]), seed=0)
    assert loaded.num_classes == 100
    assert loaded.train_labels.tolist() == [99, 99] and loaded.held_out_labels.tolist() == [99]
    torch.testing.assert_close(loaded.train, torch.from_numpy(train[[0, 3]]).float() / 255 * 2 - 1, rtol=0, atol=1e-6)
    with pytest.raises(DataError, match=r"100.*0\.\.99"):
        load_images(Data(name="cifar100", root=str(tmp_path), classes=[100]), seed=0)


def test_cifar10_missing_root_names_layout(tmp_path):
    with pytest.raises(DataError) as err:
        load_images(Data(name="cifar10", root=str(tmp_path)), seed=0)
    msg = str(err.value)
    assert DATASETS["cifar10"].layout in msg and "data.download = true" in msg


def test_cifar10_corrupt_files_are_data_errors(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cifar-10-batches-py"):  # md5 check fails → DataError with the layout
        load_images(Data(name="cifar10", root=str(tmp_path)), seed=0)


# ---------------------------------------------------------------------------- image folders


def _png(path, array: np.ndarray, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(array, mode=None if mode == "RGB" else mode).save(path)


@pytest.fixture
def folder(tmp_path):
    """Two classes (folders sorted: a_cats = 0, b_dogs = 1) of 8×14 RGB images."""
    rng = np.random.default_rng(3)
    arrays = {}
    for cls, count in (("b_dogs", 2), ("a_cats", 4)):
        for i in range(count):
            arr = rng.integers(0, 256, (8, 14, 3), dtype=np.uint8)
            _png(tmp_path / cls / f"img{i}.png", arr)
            arrays[(cls, i)] = arr
    order = [arrays[("a_cats", i)] for i in range(4)] + [arrays[("b_dogs", i)] for i in range(2)]
    return tmp_path, order


def _chw01(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255


def test_image_folder_center_crop_and_labels(folder):
    root, order = folder
    loaded = load_images(Data(name="image-folder", root=str(root), image_size=8, holdout=0.0), seed=0)
    assert loaded.num_classes == 2 and loaded.class_names == ("a_cats", "b_dogs")
    assert loaded.train_labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert loaded.train.shape == (6, 3, 8, 8) and loaded.event_shape == (3, 8, 8)
    # shorter side already 8: no resize; centre window of 14 columns starts at round(6 / 2) = 3
    for got, arr in zip(loaded.train, order):
        torch.testing.assert_close(got, _chw01(arr)[:, :, 3:11] * 2 - 1, rtol=0, atol=1e-6)


def test_image_folder_random_crop_is_seeded_window(folder):
    root, order = folder
    d = Data(name="image-folder", root=str(root), image_size=8, holdout=0.0, crop="random")
    a, b, c = load_images(d, 0), load_images(d, 0), load_images(d, 1)
    assert torch.equal(a.train, b.train)
    offsets = {}
    for seed, loaded in ((0, a), (1, c)):
        for i, (got, arr) in enumerate(zip(loaded.train, order)):
            full = _chw01(arr) * 2 - 1
            hits = [left for left in range(7) if torch.allclose(got, full[:, :, left:left + 8], atol=1e-6)]
            assert hits, "a random crop must be a window of the image"
            offsets[seed, i] = hits[0]
    assert [offsets[0, i] for i in range(6)] != [offsets[1, i] for i in range(6)]
    assert len({offsets[0, i] for i in range(6)}) > 1


def test_image_folder_resize_crop_none_grey_and_holdout(tmp_path):
    rng = np.random.default_rng(4)
    wide = rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, (36, 24, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    _png(tmp_path / "x" / "wide.png", wide)
    _png(tmp_path / "x" / "z_tall.png", tall)
    _png(tmp_path / "y" / "grey.png", grey, mode="L")
    d = Data(name="image-folder", root=str(tmp_path), image_size=12, holdout=0.0)
    center = load_images(d, seed=0)
    assert center.train.shape == (3, 3, 12, 12)
    x = _chw01(wide)[None]
    expect = F.interpolate(x, size=(12, 18), mode="bilinear", align_corners=False, antialias=True)[..., 3:15]
    torch.testing.assert_close(center.train[0], expect[0] * 2 - 1, rtol=0, atol=1e-5)
    t = _chw01(tall)[None]
    expect_t = F.interpolate(t, size=(18, 12), mode="bilinear", align_corners=False, antialias=True)[..., 3:15, :]
    torch.testing.assert_close(center.train[1], expect_t[0] * 2 - 1, rtol=0, atol=1e-5)
    g = center.train[2]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # grey → RGB
    none = load_images(Data(name="image-folder", root=str(tmp_path), image_size=12, holdout=0.0, crop="none"), 0)
    expect_n = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(none.train[0], expect_n[0] * 2 - 1, rtol=0, atol=1e-5)
    assert not torch.allclose(none.train[0], center.train[0])
    held = load_images(Data(name="image-folder", root=str(tmp_path), image_size=12, holdout=0.34), seed=0)
    assert held.num_train == 2 and held.num_held_out == 1  # round(3 · 0.34) = 1
    default = load_images(Data(name="image-folder", root=str(tmp_path), holdout=0.0), seed=0)
    assert default.event_shape == (3, 64, 64)  # catalog default size


def test_image_folder_errors(tmp_path):
    layout = DATASETS["image-folder"].layout
    with pytest.raises(DataError, match="does not exist"):
        load_images(Data(name="image-folder", root=str(tmp_path / "missing")), seed=0)
    with pytest.raises(DataError, match="no class folders"):
        load_images(Data(name="image-folder", root=str(tmp_path)), seed=0)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("no image here")
    with pytest.raises(DataError) as err:
        load_images(Data(name="image-folder", root=str(tmp_path)), seed=0)
    assert layout in str(err.value)
    with pytest.raises(DataError, match="set data.root"):
        load_images(Data(name="image-folder"), seed=0)
    (tmp_path / "cats" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        load_images(Data(name="image-folder", root=str(tmp_path)), seed=0)


def test_image_folder_unknown_class_lists_folder_names(folder):
    root, _ = folder
    with pytest.raises(DataError, match=r"0 \(a_cats\), 1 \(b_dogs\)"):
        load_images(Data(name="image-folder", root=str(root), image_size=8, classes=[2]), seed=0)


# ---------------------------------------------------------------------------- flips and batches


def _images(n=12, c=2, h=3, w=5):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(11))


def test_flip_batch_exact_mirrors_and_seeded():
    x = _images(64)
    out = flip_batch(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert (flipped ^ same).all()  # every image: exactly itself or exactly its mirror
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(out, flip_batch(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, flip_batch(x, torch.Generator().manual_seed(1)))
    assert torch.equal(x, _images(64))  # input untouched


def test_image_batches_match_batches_without_flips():
    x = _images()
    labels = torch.arange(100, 112)
    got = list(itertools.islice(image_batches(x, labels, 5, seed=3, start_example=4), 6))
    ref = list(itertools.islice(batches(x, 5, seed=3, start_example=4), 6))
    ref_y = list(itertools.islice(batches(labels, 5, seed=3, start_example=4), 6))
    for (xb, yb), r, ry in zip(got, ref, ref_y):
        assert torch.equal(xb, r) and torch.equal(yb, ry) and yb.dtype == torch.int64
    (xb, yb), = itertools.islice(image_batches(x, None, 5, seed=3), 1)
    assert yb is None and xb.shape == (5, 2, 3, 5)


def _stream(x, seed, start, count, batch_size):
    it = image_batches(x, torch.arange(x.shape[0]), batch_size, seed, start_example=start, flip=True)
    imgs, labs = [], []
    while sum(len(i) for i in imgs) < count:
        xb, yb = next(it)
        imgs.append(xb)
        labs.append(yb)
    return torch.cat(imgs)[:count], torch.cat(labs)[:count]


def test_image_batches_flips_are_mirrors_and_pure_in_position():
    x = _images()
    imgs, labs = _stream(x, seed=7, start=0, count=60, batch_size=8)  # five epochs of 12
    flipped = torch.tensor([torch.equal(im, x[k].flip(-1)) for im, k in zip(imgs, labs)])
    same = torch.tensor([torch.equal(im, x[k]) for im, k in zip(imgs, labs)])
    assert (flipped ^ same).all() and 0 < int(flipped.sum()) < 60
    # resume at any position (not a multiple of the batch size, across epoch ends) continues exactly
    for start, bs in ((7, 5), (13, 3), (24, 8), (31, 1)):
        r_imgs, r_labs = _stream(x, seed=7, start=start, count=60 - start, batch_size=bs)
        assert torch.equal(r_imgs, imgs[start:]) and torch.equal(r_labs, labs[start:])
    other, other_labs = _stream(x, seed=8, start=0, count=60, batch_size=8)
    assert not torch.equal(other_labs, labs)
    # same order with flips on or off; only the mirroring differs
    plain, plain_labs = next(image_batches(x, torch.arange(12), 60, seed=7))
    assert torch.equal(plain_labs, labs)
    assert not torch.equal(plain, imgs)


def test_image_batches_argument_checks():
    x = _images()
    with pytest.raises(ValueError, match="batch_size"):
        image_batches(x, None, 0, seed=0)
    with pytest.raises(ValueError, match="labels"):
        image_batches(x, torch.arange(5), 4, seed=0)
    with pytest.raises(ValueError, match="start_example"):
        image_batches(x, None, 4, seed=0, start_example=-1)
    with pytest.raises(DataError):
        image_batches(x[:0], None, 4, seed=0)
