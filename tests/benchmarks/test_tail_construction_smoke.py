"""Smoke test of ``benchmarks/tail_construction.py`` (every family's forward roll-out as a share of a
CIFAR U-Net training step) at tiny sizes: 2 examples, T = 20, the U-Net timed on one image."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ["gaussian", "beta", "gamma", "dirichlet", "vmf", "von-mises", "wishart", "categorical"]


@pytest.fixture
def tail():
    spec = importlib.util.spec_from_file_location("tail_construction_benchmark",
                                                  ROOT / "benchmarks" / "tail_construction.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_family_at_smoke_size(tmp_path, capsys, restore_threads, tail):
    out = tmp_path / "tail.jsonl"
    rows = tail.main(["--batch", "2", "--steps", "20", "--network-batch", "1", "--threads", "1", "--cpu-time",
                      "--json", str(out)])
    printed = capsys.readouterr().out
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["family"] for r in rows] == [r["family"] for r in written] == FAMILIES
    unet = rows[0]["unet_step_s"]
    assert math.isfinite(unet) and unet > 0
    for r in written:
        assert r["T"] == 20 and r["K"] == 8 and r["batch"] == 2 and r["unet_step_s"] == unet
        assert r["rows"] * math.prod(r["event_shape"]) * r["scale"] == pytest.approx(2 * 3072)
        for key in ("star", "coupled"):
            sec = r[f"{key}_s"]
            assert math.isfinite(sec) and sec > 0, (r["family"], key, sec)
            assert r[f"{key}_per_train_step_s"] == pytest.approx(sec / 8)
            assert 0 < r[f"share_{key}"] < 1, (r["family"], key)
            assert r[f"{key}_how"] in ("whole", "interpolated")
        assert r["clock"] == "CPU" and r["threads"] == 1 and r["commit"] and r["date"]
    assert {r["family"]: r["schedule_star"] for r in written}["gaussian"] == "ss-cosine"
    assert {r["family"]: r["schedule_coupled"] for r in written}["gaussian"] == "cosine"
    table = printed[printed.index("family "):]
    assert all(f"\n{name} " in table for name in FAMILIES)


def test_shape_override_and_no_network(tail):
    [row] = tail.main(["--families", "von_mises", "--shape", "von-mises=5", "--batch", "3", "--steps", "6",
                       "--network-batch", "0", "--whole-limit", "0"])
    assert row["family"] == "von-mises" and row["event_shape"] == [5] and row["rows"] == 3 and row["scale"] == 1
    assert row["star_how"] == row["coupled_how"] == "interpolated" and row["coupled_whole_s"] is None
    assert row["share_star"] is None and row["share_coupled"] is None and row["coupled_s"] > 0


def test_interpolation_weights_steps_by_rows_still_simulated(tail):
    per = {1: 1.0, 3: 3.0}
    assert tail.interpolated(per, 4) == pytest.approx(1 + 2 + 3 + 3)
    assert tail.interpolated(per, 4, np.array([0.25, 0.5, 1.0, 1.0])) == pytest.approx(0.25 + 1 + 3 + 3)
    assert tail.sample_steps("1,2,500,999", 20) == [1, 2, 19]
