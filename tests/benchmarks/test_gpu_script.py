"""Smoke test of ``benchmarks/gpu.sh`` (the GPU benchmarks of issue #17) in its CPU mode: every
section at tiny sizes (batch 2, T = 20, 8x8 images, a small U-Net, one thread), through the same
shell entry point and the same Python code as the GPU run, in well under a minute."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def numbers(row: dict) -> dict:
    """The row's top-level numbers (not booleans; nested records such as the raw bench JSON aside)."""
    return {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@pytest.mark.skipif(shutil.which("bash") is None, reason="benchmarks/gpu.sh needs bash")
def test_cpu_smoke_writes_every_section(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    # the script's section limits are the GPU run's 8-minute budget: lifted here, so a busy CI
    # machine cannot fail the smoke by the clock (the subprocess timeout only guards against a hang)
    lifted = [arg for section in ("device", "bench", "rollout", "bench-compile")
              for arg in ("--limit", f"{section}=3000")]
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu", "--out", str(tmp_path),
                           "--budget", "12000", *lifted], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=14400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = [json.loads(line) for line in (tmp_path / "gpu.jsonl").read_text().splitlines()]
    sections = {}
    for row in rows:
        sections.setdefault(row["section"], []).append(row)
    assert set(sections) == {"device", "train", "sampling", "memory", "network", "rollout"}
    for row in rows:
        for key, value in numbers(row).items():
            assert math.isfinite(value) and value > 0, (row["section"], key, value)
            if key.startswith("fraction"):
                assert 0 < value < 1, (row["section"], key, value)
    assert sections["device"][0]["cpu_smoke"] is True

    train = {r["variant"]: r for r in sections["train"]}
    assert set(train) == {"bf16", "bf16+compile"}
    assert "train.compile=true" in train["bf16+compile"]["overrides"]
    for r in train.values():
        assert {"images_per_s", "reference_images_per_s", "ratio"} <= set(r)
        assert math.isclose(r["ratio"], r["images_per_s"] / r["reference_images_per_s"], rel_tol=0.25)
        assert "image-folder" in r["data"]
    assert {r["variant"] for r in sections["sampling"]} == {"bf16", "bf16+compile"}
    assert all("s_per_network_eval" in r for r in sections["sampling"])
    assert {r["precision"] for r in sections["network"]} == {"bf16", "fp32"}
    assert len(sections["memory"]) == 2 + 2 + 4 and all("peak_gib" in r for r in sections["memory"])

    rollouts = {(r["family"], r["dtype"]): r for r in sections["rollout"]}
    assert set(rollouts) == {(f, d) for f in ("beta", "gaussian") for d in ("float64", "float32")}
    for r in rollouts.values():
        assert r["T"] == 20 and r["K"] == 8 and r["batch"] == 2 and r["measured"] == "whole"
        assert math.isclose(r["per_training_step_s"], r["rollout_s"] / r["K"])
        assert {"fraction_of_step_bf16", "fraction_of_step_fp32", "interpolated_s", "peak_memory_gib"} <= set(r)

    summary = (tmp_path / "summary.txt").read_text()
    assert summary in done.stdout
    for heading in ("1. training", "2. coupled roll-out", "3. sampling", "4. peak memory"):
        assert heading in summary
    assert "FAILED" not in summary and (tmp_path / "device.txt").exists()
