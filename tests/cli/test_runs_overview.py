"""``mstar runs``: the run directories of a folder at a glance, read from their files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.overview import ago, overview

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.steps=30", "train.log_every=10", "train.checkpoint_every=15", "process.steps=8", "data.num_examples=600",
        "network.mlp.hidden=16", "network.mlp.blocks=1", "sample.num_samples=20", "eval.num_samples=20",
        'compare={star-shaped = ["process.coupling.kind=independent", "process.inputs=tail"]}']


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A finished run with one [compare] variant; a copy stopped at step 15; one not started; one
    whose spec cannot be read."""
    out = tmp_path_factory.mktemp("runs")
    result = CliRunner().invoke(cli, ["run", str(ROOT / "specs" / "quickstart.toml"), *TINY, f"experiment.output_dir={out}"])
    assert result.exit_code == 0, result.output
    stopped = out / "stopped"
    shutil.copytree(out / "quickstart", stopped, ignore=shutil.ignore_patterns("compare", "results.*"))
    (stopped / "checkpoints" / "train" / "latest").write_text("step-00000015.pt\n")
    (out / "fresh").mkdir()
    shutil.copy(out / "quickstart" / "spec.resolved.toml", out / "fresh")
    (out / "broken").mkdir()
    (out / "broken" / "spec.resolved.toml").write_text("[experiment\n")
    return out


def test_overview_of_every_kind_of_run(folder):
    entries = {e["run"]: e for e in overview(folder, now=0.0)}
    assert list(entries) == ["broken", "fresh", "quickstart", "quickstart/compare/star-shaped", "stopped"]
    done = entries["quickstart"]
    assert (done["family"], done["data"], done["coupling"], done["step"], done["steps"], done["status"]) == \
        ("dirichlet", "dirichlet-mixture", "ddpm", 30, 30, "finished")
    stored = json.loads((folder / "quickstart" / "results.json").read_text())["results"]
    assert done["results"] == stored[:2]
    assert entries["quickstart/compare/star-shaped"]["coupling"] == "independent"
    assert entries["stopped"]["step"] == 15 and entries["stopped"]["status"].startswith("stopped")
    assert entries["fresh"]["status"] == "not started" and entries["fresh"]["step"] == 0
    assert entries["broken"]["status"].startswith("unreadable spec")


def test_mstar_runs_prints_a_table_and_json(folder):
    result = CliRunner().invoke(cli, ["runs", str(folder)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["run", "family", "data", "coupling", "trained", "status", "distilled", "to",
                                "results", "updated"]
    row = next(line for line in lines if line.startswith("quickstart "))
    assert "30/30" in row and "finished" in row and "knn-kl" in row
    assert json.loads(CliRunner().invoke(cli, ["runs", str(folder), "--json"]).output)[2]["run"] == "quickstart"
    missing = CliRunner().invoke(cli, ["runs", str(folder / "nope")])
    assert missing.exit_code == 1 and "is not a folder" in missing.output


@pytest.mark.parametrize("seconds, text", [(5, "5 s ago"), (300, "5 min ago"), (7200, "2 h ago"), (3 * 86400, "3 d ago")])
def test_ago(seconds, text):
    assert ago(seconds) == text
