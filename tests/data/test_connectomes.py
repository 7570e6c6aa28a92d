"""The ``connectomes`` dataset: 28×28 SPD correlation matrices read from geomstats' data files."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.data.offline import load_offline

needs_geomstats = pytest.mark.skipif(importlib.util.find_spec("geomstats") is None, reason="needs mstar[data]")
ROOT = Path(__file__).resolve().parents[2]


@needs_geomstats
def test_correlation_matrices_from_the_csv_rows():
    x = load_offline("connectomes")
    assert x.shape == (86, 28, 28) and x.dtype == torch.float64
    assert torch.equal(x, x.transpose(1, 2))
    assert torch.equal(torch.diagonal(x, dim1=1, dim2=2), torch.ones(86, 28, dtype=torch.float64))
    assert bool((torch.linalg.eigvalsh(x)[:, 0] > 0).all())            # every one positive definite
    path = Path(importlib.util.find_spec("geomstats").submodule_search_locations[0])
    row = np.loadtxt(path / "datasets/data/connectomes/train_FNC.csv", delimiter=",", skiprows=1, max_rows=1)[1:]
    # row-major upper triangle: (0,1), (0,2), ..., (0,27), (1,2), ...
    assert x[0, 0, 1] == row[0] and x[0, 0, 27] == row[26] and x[0, 1, 2] == row[27] and x[0, 27, 26] == row[-1]


@needs_geomstats
def test_wishart_runs_on_connectomes(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(ROOT / "specs" / "wishart.toml"), "data.name=connectomes",
                                      "process.steps=8", "train.steps=4", "train.log_every=2", "network.mlp.hidden=32",
                                      "network.mlp.blocks=1", "sample.num_samples=4", "eval.num_samples=8",
                                      'eval.metrics=["energy"]', f"experiment.output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    x = np.load(tmp_path / "wishart" / "samples" / "samples.npz")["samples"]
    assert x.shape == (4, 28, 28) and (np.linalg.eigvalsh(x)[:, 0] > 0).all()


def test_missing_geomstats_names_the_extra(monkeypatch):
    from mstar_engine.data.offline import MissingDependency
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "geomstats" else real(name, *a))
    with pytest.raises(MissingDependency, match=r"geomstats.*pip install 'mstar\[data\]'"):
        load_offline("connectomes")
