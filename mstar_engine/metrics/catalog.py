"""What a spec can name in ``eval.metrics``. Pure Python; spec validation reads it."""
from __future__ import annotations

import os
from pathlib import Path

import attrs

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


@attrs.frozen
class MetricInfo:
    name: str
    summary: str
    data: str            # "image", "vector" or "any"
    needs_inception: bool = False
    needs_labels: bool = False
    higher_is_better: bool = False


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("fid", "Fréchet Inception distance to the training set (pytorch-fid Inception, pool3)", "image",
                   needs_inception=True),
        MetricInfo("kid", "kernel Inception distance ± its standard error (unbiased, cubic kernel on pool3; honest "
                          "at small sample counts) against the training images", "image", needs_inception=True),
        MetricInfo("precision", "share of samples on the training images' pool3 manifold (k-NN radii, k = 3; "
                                "Kynkäänniemi et al. 2019)", "image", needs_inception=True, higher_is_better=True),
        MetricInfo("recall", "share of training images on the samples' pool3 manifold (k-NN radii, k = 3)", "image",
                   needs_inception=True, higher_is_better=True),
        MetricInfo("is", "Inception score (pytorch-fid Inception, logits)", "image", needs_inception=True,
                   higher_is_better=True),
        MetricInfo("auprc", "anomaly-detection AUPRC: per-example bound as score, held-out classes as anomalies",
                   "any", needs_labels=True, higher_is_better=True),
        MetricInfo("knn-kl", "symmetrised k-nearest-neighbour KL estimate between samples and held-out data "
                             "(SS-DDPM protocol, k = eval.knn_k)", "vector"),
        MetricInfo("mmd", "maximum mean discrepancy, Gaussian kernel (median bandwidth unless eval.mmd_bandwidth)",
                   "vector"),
        MetricInfo("energy", "energy distance between samples and held-out data", "vector"),
    )
}


def data_mismatch(name: str, dataset: str, is_image: bool) -> tuple[str, str] | None:
    """(problem, fix) when metric ``name`` does not measure the kind of data ``dataset`` holds."""
    kind = METRICS[name].data
    if kind == "image" and not is_image:
        return f"{name} measures images; '{dataset}' is not an image dataset", \
            "use knn-kl, mmd or energy for low-dimensional data"
    if kind == "vector" and is_image:
        return f"{name} is for low-dimensional data; '{dataset}' holds images", "use fid or is for images"
    return None


def default_inception_path() -> Path:
    """Where pytorch-fid caches its Inception weights: $TORCH_HOME/hub/checkpoints/<file>."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(torch_home) / "hub" / "checkpoints" / INCEPTION_FILE
