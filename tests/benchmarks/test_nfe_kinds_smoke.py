"""Smoke test of the other model kinds' rows of ``benchmarks/nfe.py`` (flow matching with Euler and
Heun steps, rectified flow, the energy-score denoiser and, where the engine distils that way,
consistency distillation) on a tiny configuration: the gaussian set, one seed, 20 training steps,
T = 16, NFE 1 to 16."""
from __future__ import annotations

import json
import math
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
NFE = [1, 2, 4, 8, 16]


def test_kind_rows_train_evaluate_and_report(tmp_path, capsys, restore_threads, nfe):
    out = tmp_path / "nfe.jsonl"
    argv = ["--datasets", "gaussian", "--models", "kinds", "--seeds", "1", "--steps", "20", "--T", "16",
            "--t-per-rollout", "2", "--nfe", *map(str, NFE), "--distill-steps", "3", "--samples", "100",
            "--hidden", "16", "--blocks", "1", "--reflow-pairs", "256", "--reflow-teacher-steps", "8",
            "--jobs", "1", "--out", str(out), "--workdir", str(tmp_path / "work"), "--plots", ""]
    nfe.main(argv)
    printed = capsys.readouterr().out
    assert "FAILED" not in printed, printed
    available, why = nfe.consistency_available()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = {(m, n) for m in ("flow-matching", "flow-matching-heun", "rectified-flow-1", "energy-score")
                for n in NFE}
    if available:
        expected |= {("consistency", n) for n in NFE if n <= 8}
    else:  # behind the switch: said, and no rows
        assert "consistency row skipped" in printed and why
    assert sorted((r["model"], r["nfe"]) for r in rows) == sorted(expected)
    for r in rows:
        assert r["dataset"] == "gaussian" and r["seed"] == 0 and r["train_examples"] == 20 * 32
        assert set(r["metrics"]) == set(r["noise_floor"]) == {"knn-kl", "mmd", "energy"}
        assert all(math.isfinite(v) for v in r["metrics"].values()), r
    by = {(r["model"], r["nfe"]): r for r in rows}
    assert by[("flow-matching", 4)]["kind"] == "flow-matching"
    assert by[("flow-matching", 4)]["coupling_used"] == "flow matching (euler)"
    assert by[("flow-matching-heun", 4)]["coupling_used"] == "flow matching (heun)"
    assert by[("energy-score", 4)]["kind"] == "energy-score"
    # one network for both solvers: Heun with one evaluation is the Euler step
    assert by[("flow-matching-heun", 1)]["metrics"] == by[("flow-matching", 1)]["metrics"]
    assert "distill.method=reflow" in by[("rectified-flow-1", 1)]["distill"]
    assert by[("rectified-flow-1", 1)]["metrics"] != by[("flow-matching", 1)]["metrics"]  # the student differs
    for name in ("flow-matching", "flow-matching-heun", "rectified-flow-1", "energy-score"):
        assert f"| {name}" in printed
    assert "model kinds beside M-Star" in printed

    nfe.main(["--report", "--out", str(out), "--plots", ""])  # from the JSONL alone, without crashing
    assert "model kinds beside M-Star" in capsys.readouterr().out


def test_kind_rows_are_selected_by_name_and_group(nfe):
    assert nfe.parse([]).models == nfe.TABLE  # the default table is unchanged
    assert nfe.parse(["--models", "kinds"]).models == ["flow-matching", "flow-matching-heun", "rectified-flow-1",
                                                       "energy-score", "consistency"]
    assert nfe.parse(["--models", "star-shaped", "energy-score"]).models == ["star-shaped", "energy-score"]
    a = nfe.parse(["--models", "all"])
    assert nfe.row_nfes(a, "consistency") == [1, 2, 4, 8] and nfe.row_nfes(a, "rectified-flow-1") == a.nfe
    to, extra = nfe.distill_settings(a, "reflow")  # the progressive chain's budget: log2(64) x 50 steps
    assert to == 1 and "distill.steps_per_stage=300" in extra and "distill.rounds=1" in extra
    assert nfe.settings_of(a) == nfe.settings_of(nfe.parse([]))  # defaults of the new options are not keyed
