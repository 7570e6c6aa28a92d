"""The image metrics of an evaluation, wired as documented (``mstar_engine.app.image_eval``):

- the reference is the whole training set unless ``eval.reference_images`` names a subset size (a
  fixed subset, the same for every seed);
- every row is at n = min(eval.num_samples, held-out images) samples, and so is its noise floor;
- FID against the reference's statistics, KID and precision/recall against n of its features,
  their noise floors the same functions of n held-out images' features;
- ``mstar eval RUN --kid`` prints KID ± its standard error, precision and recall.

The first tests replace Inception by a fixed random projection of the pixels, so that every value
can be recomputed here from the images alone; the last runs the stand-in Inception weights.
"""
from __future__ import annotations

import attrs
import numpy as np
import pytest
import torch

from mstar_engine.app import image_eval
from mstar_engine.metrics.frechet import activation_statistics, frechet_distance
from mstar_engine.metrics.kid import kernel_inception_distance
from mstar_engine.metrics.precision_recall import precision_recall
from mstar_engine.spec import load_spec_text
from tests.metrics.test_inception import eval_rows

SPEC = """
[experiment]
name = "images"
[process]
family = "gaussian"
[data]
name = "digits"
range = "unit"
[eval]
metrics = ["fid", "kid", "precision", "recall"]
num_samples = 30
"""
PROJECTION = torch.randn(64, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def features(images: torch.Tensor) -> np.ndarray:
    return (images.double().flatten(1) @ PROJECTION).numpy()


def cached(images: torch.Tensor) -> np.ndarray:
    """The features as they come back from the cache (float32)."""
    return features(images).astype(np.float32).astype(np.float64)


class Sampler:
    """Stands in for a model: uniform noise images, a function of the seed."""
    denoiser = torch.nn.Linear(1, 1)

    def sample(self, n, steps, *, seed, **_):
        return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).double()


@pytest.fixture
def seen(monkeypatch) -> list:
    """The image sets whose statistics were asked for, with Inception replaced by ``features``."""
    calls = []

    def statistics(net, images, weights, batch_size=100):
        calls.append(images)
        f = features(images)
        return {**dict(zip(("mu", "sigma"), activation_statistics(f))), "features": f.astype(np.float32),
                "inception_score": np.array(1.0)}
    monkeypatch.setattr(image_eval, "load_inception", lambda *a, **k: attrs.make_class("Net", {})())
    monkeypatch.setattr(image_eval, "weights_path", lambda path: path)
    monkeypatch.setattr(image_eval, "image_statistics", statistics)
    monkeypatch.setattr(image_eval, "activations", lambda net, images, batch_size: (features(images), None))
    return calls


def rows_of(spec, train, held_out, seed=3) -> dict:
    return {row["metric"]: row for _, row in
            image_eval.image_rows([("teacher", Sampler(), 4)], spec, held_out, train, seed)}


def test_the_reference_is_the_whole_training_set_and_every_row_is_at_n(seen):
    spec = load_spec_text(SPEC, "images.toml").spec
    g = torch.Generator().manual_seed(0)
    # "real" images in [0, 0.5], the samples in [0, 1]
    train, held_out = torch.rand(200, 1, 8, 8, generator=g) / 2, torch.rand(50, 1, 8, 8, generator=g) / 2
    rows = rows_of(spec, train, held_out)
    reference, real = seen
    assert torch.equal(reference, train) and torch.equal(real, held_out[:30])
    assert {r["samples"] for r in rows.values()} == {30}

    samples = features(Sampler().sample(30, 4, seed=3 + 100))
    mu, sigma = activation_statistics(features(train))
    assert rows["fid"]["value"] == pytest.approx(frechet_distance(*activation_statistics(samples), mu, sigma), rel=1e-9)
    assert rows["fid"]["noise_floor"] == pytest.approx(
        frechet_distance(*activation_statistics(cached(held_out[:30])), mu, sigma), rel=1e-9)
    # KID and precision/recall: against 30 of the training features, the same subset for the floor
    ref = cached(train)
    pick = torch.randperm(200, generator=torch.Generator().manual_seed(3 + 13))[:30].numpy()
    kid, se = kernel_inception_distance(samples, ref[pick])
    assert (rows["kid"]["value"], rows["kid"]["std"]) == pytest.approx((kid, se), rel=1e-6)
    assert rows["kid"]["noise_floor"] == pytest.approx(
        kernel_inception_distance(cached(held_out[:30]), ref[pick])[0], rel=1e-6, abs=1e-12)
    precision, recall = precision_recall(ref[pick], samples, k=3)
    assert (rows["precision"]["value"], rows["recall"]["value"]) == pytest.approx((precision, recall))
    floor = precision_recall(ref[pick], cached(held_out[:30]), k=3)
    assert (rows["precision"]["noise_floor"], rows["recall"]["noise_floor"]) == pytest.approx(floor)
    # held-out images are closer to the reference than the samples, which spread wider (less precise)
    assert all(rows[m]["noise_floor"] < rows[m]["value"] for m in ("fid", "kid"))
    assert rows["precision"]["noise_floor"] > rows["precision"]["value"]


def test_fewer_held_out_images_than_samples_asked_for_sets_n(seen):
    spec = load_spec_text(SPEC, "images.toml").spec
    g = torch.Generator().manual_seed(1)
    rows = rows_of(spec, torch.rand(100, 1, 8, 8, generator=g), torch.rand(12, 1, 8, 8, generator=g))
    assert {r["samples"] for r in rows.values()} == {12} and seen[1].shape[0] == 12


def test_reference_images_is_a_fixed_subset(seen):
    spec = load_spec_text(SPEC + "reference_images = 64\n", "images.toml").spec
    g = torch.Generator().manual_seed(2)
    train, held_out = torch.rand(200, 1, 8, 8, generator=g), torch.rand(50, 1, 8, 8, generator=g)
    rows_of(spec, train, held_out, seed=3)
    rows_of(spec, train, held_out, seed=4)      # another evaluation seed: the same reference
    first, second = seen[0], seen[2]
    assert first.shape[0] == 64 and torch.equal(first, second)
    rows = {tuple(x.flatten().tolist()) for x in train}
    assert all(tuple(x.flatten().tolist()) in rows for x in first)       # training images, each once
    assert len({tuple(x.flatten().tolist()) for x in first}) == 64
    assert torch.equal(image_eval.reference_images(train, 500), train)   # larger than the set: all of it


def test_eval_kid_prints_kid_with_its_standard_error_precision_and_recall(digits_run):
    rows = eval_rows(digits_run, "--kid")
    assert set(rows) == {"fid", "is", "kid", "precision", "recall"}
    assert {r["samples"] for r in rows.values()} == {6}
    assert rows["kid"]["std"] > 0 and np.isfinite(rows["kid"]["value"])
    assert all(0 <= rows[m][k] <= 1 for m in ("precision", "recall") for k in ("value", "noise_floor"))
