"""Inception statistics of real images: cached on disk by content and weights file, equal to a
fresh computation; FID reference statistics read from pytorch-fid's file format."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.util import cache
from mstar_engine.metrics import image_statistics as stats_module
from mstar_engine.metrics.frechet import activation_statistics, frechet_distance
from mstar_engine.metrics.image_statistics import (ReferenceStatisticsError, image_statistics, load_reference)
from mstar_engine.metrics.inception import activations, inception_score, load_inception
from tests.metrics.test_inception import eval_rows


@pytest.fixture
def counted(monkeypatch) -> list:
    """Record every batch of images sent through Inception by image_statistics."""
    calls = []

    def counting(net, images, batch_size=100):
        calls.append(images.shape[0])
        return activations(net, images, batch_size)
    monkeypatch.setattr(stats_module, "activations", counting)
    return calls


def test_statistics_equal_a_fresh_computation_and_come_back_from_the_cache(weights, counted, monkeypatch, tmp_path):
    monkeypatch.setenv("MSTAR_CACHE_DIR", str(tmp_path))
    net = load_inception(weights)
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = image_statistics(net, images, weights, batch_size=2)
    pool, logits = activations(net, images, 2)
    mu, sigma = activation_statistics(pool)
    np.testing.assert_allclose(first["mu"], mu, rtol=1e-12)
    np.testing.assert_allclose(first["sigma"], sigma, rtol=1e-12, atol=1e-15)
    assert float(first["inception_score"]) == pytest.approx(inception_score(logits)[0], rel=1e-12)
    assert counted == [5] and len(list((tmp_path / "inception").glob("*.npz"))) == 1

    again = image_statistics(net, images.clone(), weights, batch_size=3)   # same values, other batching
    assert counted == [5]
    assert all(np.array_equal(first[k], again[k]) for k in first)
    image_statistics(net, images[:4], weights)               # other images: computed
    image_statistics(net, images, weights, use_cache=False)  # asked not to read the cache
    assert counted == [5, 4, 5]
    when = os.stat(weights).st_mtime_ns
    os.utime(weights, ns=(when + 10**9, when + 10**9))        # a replaced weights file: computed again
    image_statistics(net, images, weights)
    assert counted == [5, 4, 5, 5]


def test_reference_file_round_trip_and_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    mu, a = rng.normal(size=2048), rng.normal(size=(2048, 8))
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=a @ a.T)     # what pytorch-fid --save-stats writes
    got_mu, got_sigma = load_reference(tmp_path / "ref.npz")
    assert np.array_equal(got_mu, mu) and np.array_equal(got_sigma, a @ a.T)
    with pytest.raises(ReferenceStatisticsError, match="not found at .*missing.npz"):
        load_reference(tmp_path / "missing.npz")
    np.savez(tmp_path / "small.npz", mu=mu[:10], sigma=np.eye(10))
    with pytest.raises(ReferenceStatisticsError, match=r"holds mu \(10,\) and sigma \(10, 10\)"):
        load_reference(tmp_path / "small.npz")
    np.savez(tmp_path / "other.npz", mean=mu)
    with pytest.raises(ReferenceStatisticsError, match="cannot read .*'mu is not a file in the archive'.*arrays mu"):
        load_reference(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ReferenceStatisticsError, match="cannot read"):
        load_reference(tmp_path / "text.npz")


def test_eval_caches_the_real_images_statistics_and_reads_a_reference_file(digits_run, monkeypatch, tmp_path):
    """The second evaluation reads the training and held-out images' statistics from the cache.
    A reference file then replaces the training images' statistics: the noise floor becomes the
    Fréchet distance of the held-out statistics (one of the two cached entries) to the file's, here
    a reference with every mean moved by 1 (about 2048 away instead of about 0); a bad file is a
    clear error."""
    monkeypatch.setenv("MSTAR_CACHE_DIR", str(tmp_path / "cache"))
    before = dict(cache.STATS)
    first = eval_rows(digits_run)
    middle = dict(cache.STATS)
    assert middle.get("misses", 0) - before.get("misses", 0) == 2           # training and held-out images
    assert eval_rows(digits_run) == first
    assert cache.STATS["misses"] == middle.get("misses", 0)                 # none the second time
    assert cache.STATS["hits"] - middle.get("hits", 0) == 2

    entries = [np.load(p) for p in cache.cache_dir("inception").glob("*.npz")]
    assert len(entries) == 2
    mu, sigma = entries[0]["mu"] + 1.0, entries[0]["sigma"]
    np.savez(tmp_path / "moved.npz", mu=mu, sigma=sigma)
    rows = eval_rows(digits_run, "--fid-reference", str(tmp_path / "moved.npz"))
    candidates = [frechet_distance(e["mu"], e["sigma"], mu, sigma) for e in entries]
    assert any(rows["fid"]["noise_floor"] == pytest.approx(c, rel=1e-9) for c in candidates)
    assert rows["fid"]["noise_floor"] > first["fid"]["noise_floor"] + 1000
    assert rows["fid"]["value"] > first["fid"]["value"] + 1000
    assert rows["is"] == first["is"]   # the Inception score does not use the reference
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3), sigma=np.eye(3))
    result = CliRunner().invoke(cli, ["eval", str(digits_run), "--fid", "-n", "6", "--steps", "2",
                                      "--fid-reference", str(tmp_path / "bad.npz")])
    assert result.exit_code == 1 and "holds mu (3,) and sigma (3, 3)" in result.output
    assert "Traceback" not in result.output
