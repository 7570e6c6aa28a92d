"""FID / IS plumbing against pytorch-fid and torchvision, and the Inception score against its
definition (no real Inception weights are needed: a randomly initialised network saved in the
pytorch-fid file format stands in for them).

- pool3 features equal pytorch-fid's own ``InceptionV3`` (block 3) on the same weights and images
  (its resize and scaling included); logits equal torchvision's Inception forward;
- the Inception score equals exp(H(p(y)) − E H(p(y|x))) computed with scipy, and its closed
  forms (uniform predictions: 1; confident predictions spread evenly over k classes: k);
- a missing or unreadable weights file is a clear error naming the file and --download;
- ``mstar eval RUN --fid --is`` on a tiny digits run prints finite FID and IS rows.
"""
from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

from mstar_cli.main import cli
from mstar_engine.metrics.inception import InceptionWeightsMissing, activations, inception_score, load_inception

ROOT = Path(__file__).resolve().parents[2]


def test_features_equal_pytorch_fid_and_logits_equal_torchvision(weights):
    pf = pytest.importorskip("pytorch_fid.inception")
    ours = load_inception(weights)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    pool, logits = ours(x)
    state = torch.load(weights, weights_only=True)
    with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: state):
        reference = pf.InceptionV3([3], use_fid_inception=True).eval()
    with torch.no_grad():
        expected_pool = reference(x)[0].flatten(1)
        resized = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        expected_logits = ours.net(2 * resized - 1)  # torchvision's own forward (eval: no dropout)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    torch.testing.assert_close(pool, expected_pool, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-5)
    grey = x[:, :1]
    torch.testing.assert_close(ours(grey)[0], ours(grey.repeat(1, 3, 1, 1))[0])


def test_inception_score_matches_its_definition():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(300, 10)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = np.exp(stats.entropy(p.mean(0)) - np.mean([stats.entropy(row) for row in p]))
    assert inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-10)
    parts = [np.exp(stats.entropy(q.mean(0)) - np.mean([stats.entropy(r) for r in q])) for q in np.array_split(p, 3)]
    mean, std = inception_score(logits, splits=3)
    assert mean == pytest.approx(np.mean(parts), rel=1e-10) and std == pytest.approx(np.std(parts), rel=1e-10)


@pytest.mark.parametrize("k", [1, 4, 10])
def test_inception_score_closed_forms(k):
    assert inception_score(np.zeros((50, 1008)), splits=1)[0] == pytest.approx(1.0)
    logits = np.full((10 * k, 1008), -50.0)
    logits[np.arange(10 * k), np.arange(10 * k) % k] = 50.0   # confident, spread evenly over k classes
    assert inception_score(logits, splits=1)[0] == pytest.approx(k, rel=1e-9)


def test_missing_or_bad_weights_are_clear_errors(tmp_path):
    with pytest.raises(InceptionWeightsMissing, match=r"not found at .*nothing\.pth.*--download"):
        load_inception(tmp_path / "nothing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InceptionWeightsMissing, match="is not a torch weights archive"):
        load_inception(bad)


def test_activations_batch_independent(weights):
    net = load_inception(weights)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    a, la = activations(net, x, batch_size=3)
    b, lb = activations(net, x, batch_size=2)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert a.dtype == np.float64 and la.shape == (3, 1008)


def eval_rows(run: Path, *args: str) -> dict:
    result = CliRunner().invoke(cli, ["eval", str(run), "--fid", "--is", "-n", "6", "--steps", "2", "--json", *args])
    assert result.exit_code == 0, result.output
    return {r["metric"]: r for r in json.loads(result.output)["results"]}


def test_eval_fid_and_is_on_digits(digits_run):
    rows = eval_rows(digits_run)
    assert set(rows) == {"fid", "is"}
    assert all(np.isfinite(r["value"]) and np.isfinite(r["noise_floor"]) for r in rows.values())
    assert rows["is"]["value"] >= 1.0 - 1e-9 and rows["fid"]["samples"] == 6
