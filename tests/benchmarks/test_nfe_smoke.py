"""Smoke test of ``benchmarks/nfe.py`` (the quality-vs-NFE table) on a tiny configuration: one
dataset, two models (one distilled), one seed, 20 training steps, T = 4, NFE 1 and 2."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_table_resume_and_report(tmp_path, capsys, restore_threads, nfe):
    out, plots = tmp_path / "nfe.jsonl", tmp_path / "plots"
    argv = ["--datasets", "gaussian", "--models", "star-shaped", "M-Star distilled", "--seeds", "1", "--steps", "20",
            "--T", "4", "--t-per-rollout", "2", "--nfe", "1", "2", "--distill-steps", "3", "--samples", "100", "--hidden", "16",
            "--blocks", "1", "--jobs", "1", "--out", str(out), "--workdir", str(tmp_path / "work"),
            "--plots", str(plots)]
    nfe.main(argv)
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["model"], r["nfe"]) for r in rows) == [("M-Star distilled", 1), ("M-Star distilled", 2),
                                                            ("star-shaped", 1), ("star-shaped", 2)]
    for r in rows:
        assert r["dataset"] == "gaussian" and r["seed"] == 0 and r["train_examples"] == 20 * 32
        assert set(r["metrics"]) == set(r["noise_floor"]) == {"knn-kl", "mmd", "energy"}
        assert all(math.isfinite(v) for v in r["metrics"].values())
        assert r["commit"] and r["settings"] and r["machine"] and r["seconds"]["train"] > 0
    assert "| star-shaped" in printed and "| M-Star distilled" in printed and "| noise floor" in printed
    assert (plots / "nfe-gaussian-energy.svg").read_text().startswith("<svg")

    nfe.main(argv)  # every (dataset, model, seed) is already there: nothing is trained or appended
    again = capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 4 and " seed 0 " not in again

    nfe.main(["--report", "--out", str(out), "--plots", ""])  # the same summary from the JSONL alone
    assert summary(capsys.readouterr().out) == summary(printed)


def summary(printed: str) -> list[str]:
    """The printed report (tables and goals) without the line that counts the plots written."""
    text = printed[printed.index("4 rows of"):]
    return [line for line in text.strip().splitlines() if " plots in " not in line and line.strip()]


def test_projection_into_each_domain(nfe):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(nfe.project(x, "sphere").norm(dim=-1), torch.ones(50, dtype=torch.float64))
    simplex = nfe.project(x, "simplex")
    assert (simplex > 0).all() and torch.allclose(simplex.sum(-1), torch.ones(50, dtype=torch.float64))
    spd = nfe.project(torch.randn(20, 3, 3, generator=g, dtype=torch.float64), "spd")
    assert torch.allclose(spd, spd.transpose(-1, -2))
    assert (torch.linalg.eigvalsh(spd) > 0).all()
    angles = nfe.project(10 * x, "circle")
    assert (angles >= -math.pi).all() and (angles < math.pi).all()
    box = nfe.project(x, "unit-box")
    assert (box >= 0).all() and (box <= 1).all()
    tokens = nfe.project(torch.randn(7, 8, 4, generator=g), "categorical")
    assert torch.equal(tokens.sum(-1), torch.ones(7, 8))
    assert torch.equal(nfe.project(x, "real"), x)


def test_goals_are_not_called_met_without_family_sets(nfe):
    """Rows of the real sets alone (connectomes, digits-beta) say nothing about the goals."""
    lines = nfe.goals({"connectomes": {"cells": {("star-shaped", 8, "energy"): (4.6, 0.3, "star-shaped")}}})
    assert lines == ["goals: not evaluated (0 of 8 family sets present, energy; rows of connectomes only)"]
