"""``mstar runs``: the run directories of a folder at a glance, read from their files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.app import overview as overview_module
from mstar_engine.app.overview import ago, overview

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
    (stopped / "checkpoints" / "train" / "step-00000030.pt").unlink()
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


@pytest.fixture
def damaged(folder, tmp_path) -> Path:
    """The runs of ``folder`` beside a run whose ``latest`` pointer names a missing file, one with a
    malformed results.json and one whose results.json is JSON but not a results file."""
    out = tmp_path / "runs"
    shutil.copytree(folder, out)
    shutil.copytree(out / "stopped", out / "dangling")
    (out / "dangling" / "checkpoints" / "train" / "latest").write_text("step-00000099.pt\n")
    shutil.copytree(out / "quickstart", out / "malformed", ignore=shutil.ignore_patterns("compare"))
    (out / "malformed" / "results.json").write_text('{"results": [\n  {"metric": "knn-kl",\n  oops\n')
    shutil.copytree(out / "quickstart", out / "listed", ignore=shutil.ignore_patterns("compare"))
    (out / "listed" / "results.json").write_text("[]\n")
    return out


def check_damaged(entries: dict) -> None:
    assert list(entries) == ["broken", "dangling", "fresh", "listed", "malformed", "quickstart",
                             "quickstart/compare/star-shaped", "stopped"]
    assert (entries["dangling"]["step"], entries["dangling"]["family"]) == (15, "dirichlet")
    assert entries["dangling"]["status"].startswith("stopped")
    malformed = entries["malformed"]
    assert malformed["step"] == 30 and malformed["results"] == []
    assert malformed["status"].startswith(f"unreadable results.json: {malformed['path']}/results.json:3:3: "), \
        malformed["status"]
    assert entries["listed"]["status"].startswith(f"unreadable results.json: {entries['listed']['path']}/results.json: "
                                                  "not an mstar results file")
    assert entries["quickstart"]["status"] == "finished" and entries["quickstart"]["results"]
    assert entries["stopped"]["step"] == 15 and entries["fresh"]["status"] == "not started"


def test_a_damaged_run_is_listed_with_what_cannot_be_read_and_the_others_as_usual(damaged):
    check_damaged({e["run"]: e for e in overview(damaged, now=0.0)})
    result = CliRunner().invoke(cli, ["runs", str(damaged)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("malformed "))
    assert "30/30" in row and "unreadable results.json: " in row and "results.json:3:3:" in row
    assert "finished" in next(line for line in result.output.splitlines() if line.startswith("quickstart "))


def test_a_torn_last_line_of_distill_jsonl_is_left_out_and_a_bad_line_named(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "distill.jsonl").write_text('{"stage": 8, "step": 6}\n{"stage": 4, "st')
    assert overview_module._finished_stages(run, 6) == {8}
    (run / "distill.jsonl").write_text('{"stage": 8, "step": 6}\nnot json\n{"stage": 4, "step": 6}\n')
    with pytest.raises(ValueError, match=r"distill.jsonl:2: not a JSON record"):
        overview_module._finished_stages(run, 6)


@pytest.mark.parametrize("seconds, text", [(5, "5 s ago"), (300, "5 min ago"), (7200, "2 h ago"), (3 * 86400, "3 d ago")])
def test_ago(seconds, text):
    assert ago(seconds) == text
