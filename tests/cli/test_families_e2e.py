"""``mstar run specs/<family>.toml`` end to end for every family spec on built-in (non-image) data.

Each run is shortened to T = 8 steps, 8 optimiser steps, 2000 examples, a small MLP and 20
samples: the point is that every family trains, samples inside its domain and evaluates with
finite metrics through the real CLI, not that it learns. T = 8 works with every family spec's
default schedule, so no family needed a larger value.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.data.catalog import DATASETS
from mstar_engine.families import REGISTRY
from mstar_engine.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
FAMILY_SPECS = ["gaussian", "beta", "dirichlet", "vmf", "wishart", "categorical", "gamma", "von-mises"]
SHORT = ["train.steps=8", "train.log_every=4", "train.checkpoint_every=8", "sample.num_samples=20",
         "eval.num_samples=20", "eval.repeats=1", "process.steps=8",
         # not in the shipped specs' sizes: 50000 synthetic examples and a 512-wide MLP dominate the time
         "data.num_examples=2000", "network.mlp.hidden=64", "network.mlp.blocks=1", "compare={}"]


def _in_domain(family: str, x: np.ndarray) -> None:
    """Independent, explicit domain checks (besides the family's own ``check_domain``)."""
    assert np.isfinite(x).all()
    if family == "beta":
        assert ((x > 0) & (x < 1)).all()
    elif family == "gamma":
        assert (x > 0).all()
    elif family == "dirichlet":
        assert (x >= 0).all()
        np.testing.assert_allclose(x.sum(-1), 1.0, rtol=0, atol=1e-6)
    elif family == "categorical":  # x̂0: a probability vector over the K classes at every position
        assert ((x >= 0) & (x <= 1)).all()
        np.testing.assert_allclose(x.sum(-1), 1.0, rtol=0, atol=1e-6)
    elif family == "vmf":
        np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1.0, rtol=0, atol=1e-6)
    elif family == "von-mises":
        assert ((x >= -math.pi) & (x < math.pi)).all()
    elif family == "wishart":
        np.testing.assert_allclose(x, np.swapaxes(x, -1, -2), rtol=0, atol=1e-9)
        assert (np.linalg.eigvalsh(x) > 0).all()
    else:
        assert family == "gaussian"


def test_every_non_image_family_spec_is_covered():
    """A new family spec on non-image data must be added to FAMILY_SPECS."""
    shipped = {}
    for path in (ROOT / "specs").glob("*.toml"):
        spec = load_spec(path).spec
        if not DATASETS[spec.data.name].is_image and spec.distill is None and \
                path.stem not in ("quickstart", "few-step"):
            shipped[path.stem] = spec.process.family
    assert sorted(shipped) == sorted(FAMILY_SPECS)
    assert sorted(set(shipped.values())) == sorted(REGISTRY)  # every registered family has a spec
    assert all(shipped[name] == name for name in FAMILY_SPECS)


@pytest.mark.parametrize("name", FAMILY_SPECS)
def test_family_spec_runs(name, tmp_path):
    from mstar_engine import load_run

    result = CliRunner().invoke(cli, ["run", str(ROOT / "specs" / f"{name}.toml"), *SHORT,
                                      f"experiment.output_dir={tmp_path}", "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / name

    results = json.loads((run_dir / "results.json").read_text())
    assert json.loads(result.stdout) == results
    assert results["family"] == name
    rows = results["results"]
    expected = {"mmd", "energy"} if name == "categorical" else {"knn-kl", "mmd", "energy"}  # no kNN on tokens
    assert {r["metric"] for r in rows} == expected
    assert {r["steps"] for r in rows} == {8}
    assert all(math.isfinite(r["value"]) and math.isfinite(r["noise_floor"]) and r["samples"] == 20 for r in rows)

    run = load_run(run_dir)
    assert run.step == 8
    family = run.model.process.family
    assert family.steps == 8 and type(family) is REGISTRY[name]
    with np.load(run_dir / "samples" / "samples.npz") as archive:
        x = archive["samples"]
    assert x.shape == (20, *family.event_shape)
    assert x.dtype == np.float64
    family.check_domain(torch.from_numpy(x), what=f"{name} samples")
    _in_domain(name, x)
