"""Image metrics of samplers, each beside its noise floor at the same sample count n: FID against
the training images' pool3 statistics (or a published statistics file), KID ± its standard error,
precision and recall (k-NN manifolds), and the Inception score.

The reference is the whole training set (or ``eval.reference_images`` of it, a fixed random
subset); its statistics come from mstar's cache after the first evaluation. FID uses the
reference's mean and covariance; KID and precision/recall compare n sample features with n
reference features (a random subset of those cached), since both depend on the set sizes. The
noise floor is each metric of n held-out images: what a perfect model would score at that n. At
small n, FID's floor is large (its bias); KID is unbiased, so its floor is near 0.
"""
from __future__ import annotations

import numpy as np
import torch

from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.metrics.frechet import activation_statistics, frechet_distance
from mstar_engine.metrics.image_statistics import image_statistics, load_reference
from mstar_engine.metrics.inception import (InceptionWeightsMissing, activations, inception_score, load_inception,
                                            weights_path)
from mstar_engine.metrics.kid import kernel_inception_distance
from mstar_engine.metrics.precision_recall import precision_recall
from mstar_engine.spec.schema import Spec

IMAGE_METRICS = ("fid", "kid", "precision", "recall", "is")
#: Neighbours of the k-NN manifold estimate (Kynkäänniemi et al. 2019 use k = 3).
PR_NEIGHBOURS = 3


def image_rows(runs, spec: Spec, held_out: torch.Tensor, train_data: torch.Tensor, seed: int,
               download: bool = False, group: Group = SINGLE):
    """(who, row) of every wanted image metric of every (who, sampler, steps) in ``runs``."""
    ev = spec.eval
    wanted = [m for m in ev.metrics if m in IMAGE_METRICS]
    device = next(runs[0][1].denoiser.parameters()).device
    net = load_inception(ev.inception_weights, download=download, device=device)
    if "is" in wanted and not net.logits:
        raise InceptionWeightsMissing(
            f"the Inception score needs the network's logits, which {weights_path(ev.inception_weights)} (fid-helper's "
            "TorchScript, pool3 only) does not have: use pytorch-fid's weights for IS, or measure FID alone")

    def unit(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return ((x + 1) / 2 if spec.data.range == "symmetric" else x).clamp(0, 1)

    def statistics(images: torch.Tensor) -> dict:
        return image_statistics(net, unit(images), weights_path(ev.inception_weights), batch_size=ev.batch_size)

    n = min(ev.num_samples, held_out.shape[0])
    reference = statistics(reference_images(train_data, ev.reference_images))
    mu_ref, sigma_ref = load_reference(ev.fid_reference) if ev.fid_reference else (reference["mu"], reference["sigma"])
    pick = torch.randperm(reference["features"].shape[0], generator=torch.Generator().manual_seed(seed + 13))[:n]
    ref_features = reference["features"][pick.numpy()].astype(np.float64)

    def measures(pool: np.ndarray, logits: np.ndarray | None) -> dict[str, tuple[float, float]]:
        """metric → (value, standard error or 0) of one set of n images' features."""
        out = {}
        if "fid" in wanted:
            out["fid"] = (frechet_distance(*activation_statistics(pool), mu_ref, sigma_ref), 0.0)
        if "kid" in wanted:
            out["kid"] = kernel_inception_distance(pool, ref_features)
        if "precision" in wanted or "recall" in wanted:
            p, r = precision_recall(ref_features, pool, k=PR_NEIGHBOURS)
            out["precision"], out["recall"] = (p, 0.0), (r, 0.0)
        if "is" in wanted and logits is not None:
            out["is"] = (inception_score(logits)[0], 0.0)
        return out

    real = statistics(held_out[:n])
    floor = {**measures(real["features"].astype(np.float64), None), "is": (float(real["inception_score"]), 0.0)}
    for who, sampler, steps in runs:
        draws = []
        for r in range(ev.repeats):
            x = sampler.sample(n, steps, seed=seed + 100 + r, batch_size=ev.batch_size,
                               precision=spec.sample.precision, group=group)
            draws.append(measures(*activations(net, unit(x), ev.batch_size)))
        for name in wanted:
            values = np.array([d[name][0] for d in draws])
            errors = np.array([d[name][1] for d in draws])
            # KID: ± its standard error (of the mean over repeats); the others: the spread over repeats
            spread = float(np.sqrt(np.mean(errors ** 2) / len(draws))) if name == "kid" else float(np.std(values))
            yield who, {"metric": name, "steps": steps, "value": float(np.mean(values)), "std": spread,
                        "noise_floor": float(floor[name][0]), "samples": n}


def reference_images(train_data: torch.Tensor, size: int | None) -> torch.Tensor:
    """The training images the image metrics compare with: all, or a fixed random subset of ``size``
    (the same for every run on the same data, so the cached statistics are shared)."""
    if size is None or size >= train_data.shape[0]:
        return train_data
    return train_data[torch.randperm(train_data.shape[0], generator=torch.Generator().manual_seed(0))[:size]]
