"""``train.eval_every``: evaluations of the EMA weights during training, written to eval.jsonl,
changing nothing in the training, and kept exact through a crash and resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mstar_engine.kinds.exponential as loop  # the exponential-family kind's step loss
from mstar_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "specs" / "quickstart.toml")
TINY = ["train.steps=30", "train.log_every=10", "train.checkpoint_every=15", "process.steps=8", "compare={}",
        "data.num_examples=1000", "network.mlp.hidden=32", "network.mlp.blocks=1", "sample.num_samples=40",
        "eval.num_samples=40", "eval.steps=[4, 8]"]


class Crash(RuntimeError):
    pass


def run(out: Path, *extra: str):
    result = CliRunner().invoke(cli, ["run", QUICKSTART, *TINY, f"experiment.output_dir={out}", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("eval-every")
    for name, extra in (("plain", []), ("evaluated", ["train.eval_every=10"])):
        result = run(out / name, *extra)
        assert result.exit_code == 0, result.output
    return {name: out / name / "quickstart" for name in ("plain", "evaluated")}


def test_curve_has_every_interval_and_ends_with_the_final_results(runs):
    rows = lines(runs["evaluated"])
    assert [(r["step"], r["metric"], r["steps"]) for r in rows] == [
        (step, metric, k) for step in (10, 20, 30) for k in (8, 4) for metric in ("knn-kl", "energy")]
    final = json.loads((runs["evaluated"] / "results.json").read_text())["results"]
    assert [{k: v for k, v in r.items() if k != "step"} for r in rows if r["step"] == 30] == final
    assert len({r["value"] for r in rows if r["metric"] == "energy" and r["steps"] == 8}) == 3  # it moves
    for metric in ("knn-kl", "energy"):   # and a chart of each metric
        assert (runs["evaluated"] / f"eval-{metric}.svg").read_text().count("<polyline") == 2
    assert not list(runs["plain"].glob("eval-*.svg"))


def test_evaluating_during_training_changes_nothing_in_the_training(runs):
    a = torch.load(runs["plain"] / "checkpoints" / "train" / "step-00000030.pt", weights_only=True)
    b = torch.load(runs["evaluated"] / "checkpoints" / "train" / "step-00000030.pt", weights_only=True)
    for key in ("model", "ema", "torch_rng"):
        items = a[key].items() if isinstance(a[key], dict) else [(key, a[key])]
        for name, tensor in items:
            other = b[key][name] if isinstance(a[key], dict) else b[key]
            assert torch.equal(tensor, other), f"{key} {name}"
    plain = json.loads((runs["plain"] / "results.json").read_text())["results"]
    assert json.loads((runs["evaluated"] / "results.json").read_text())["results"] == plain


def test_a_crash_after_an_evaluation_resumes_without_keeping_it_twice(runs, tmp_path, monkeypatch):
    """Crash in step 25: the evaluation at step 20 was written, the last checkpoint is step 15.
    The resumed run drops that line and writes it again: the same file as a run never stopped."""
    real, calls = loop.step_loss, [0]

    def step_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 25:
            raise Crash("crash in step 25")
        return real(*args, **kwargs)
    monkeypatch.setattr(loop, "step_loss", step_loss)
    result = run(tmp_path, "train.eval_every=10")
    assert result.exit_code == 1 and "crash in step 25" in result.output
    run_dir = tmp_path / "quickstart"
    assert [r["step"] for r in lines(run_dir)][-1] == 20
    monkeypatch.undo()
    result = run(tmp_path, "train.eval_every=10")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "step 15" in result.output
    assert lines(run_dir) == lines(runs["evaluated"])


def test_results_during_training_tabulates_the_curve(runs):
    result = CliRunner().invoke(cli, ["results", str(runs["evaluated"]), "--during-training"])
    assert result.exit_code == 0, result.output
    title, header, _, *rows = result.output.splitlines()
    assert title == "quickstart: evaluations during training: lower is better"
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "optimiser step", "knn-kl (8 steps)", "energy (8 steps)", "knn-kl (4 steps)", "energy (4 steps)"]
    assert [row.split("|")[1].strip() for row in rows] == ["10", "20", "30"]
    result = CliRunner().invoke(cli, ["results", str(runs["plain"]), "--during-training"])
    assert result.exit_code == 1 and "has no eval.jsonl: runs write one when train.eval_every is set" in result.output


def test_eval_every_without_metrics_is_a_spec_error(tmp_path):
    result = CliRunner().invoke(cli, ["validate", QUICKSTART, "--set", "train.eval_every=10", "--set",
                                      "eval.metrics=[]"])
    assert result.exit_code == 2
    assert "train.eval_every: eval_every evaluates eval.metrics during training, and eval.metrics is empty" in \
        result.output
