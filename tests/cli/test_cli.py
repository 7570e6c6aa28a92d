"""The ``mstar`` command line: validate, plan (against golden files), list, run and usage errors.

Golden plans live in tests/cli/golden/. After an intended change of ``mstar plan`` output,
rewrite them with ``MSTAR_UPDATE_GOLDEN=1 python -m pytest tests/cli`` and review the diff.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.toml"))
GOLDEN = Path(__file__).resolve().parent / "golden"


def invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def in_root(monkeypatch):
    """Run from the repository root so that spec paths (and the plan's sources) are stable."""
    monkeypatch.chdir(ROOT)


# ------------------------------------------------------------------------------------ validate

def test_there_are_shipped_specs():
    assert len(SPECS) >= 10


def test_validate_every_shipped_spec_at_once(in_root):
    paths = [str(p.relative_to(ROOT)) for p in SPECS]
    result = invoke("validate", *paths)
    assert result.exit_code == 0, result.output
    for path in paths:
        assert f"OK {path}: " in result.output
    assert not [line for line in result.output.splitlines() if line.startswith("error")]


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_validate_each_shipped_spec(spec):
    result = invoke("validate", str(spec))
    assert result.exit_code == 0, result.output
    assert f"OK {spec}: " in result.output


def test_validate_summary_line(in_root):
    result = invoke("validate", "specs/quickstart.toml")
    assert result.exit_code == 0
    assert result.output == "OK specs/quickstart.toml: quickstart (dirichlet on dirichlet-mixture, 64 steps)\n"


def test_validate_reports_every_spec_and_fails_if_one_fails(tmp_path, in_root):
    bad = tmp_path / "bad.toml"
    bad.write_text('[experiment]\nname = "b"\n', encoding="utf-8")
    result = invoke("validate", "specs/quickstart.toml", str(bad), "specs/gaussian.toml")
    assert result.exit_code == 2
    assert "OK specs/quickstart.toml: " in result.output
    assert "OK specs/gaussian.toml: " in result.output
    assert f"error: {bad}:1:1: data: missing required table [data]" in result.output
    assert f"error: {bad}:1:1: process: missing required table [process]" in result.output
    assert f"FAIL {bad}: 2 errors" in result.output


def test_validate_applies_set_overrides(in_root):
    result = invoke("validate", "specs/quickstart.toml", "--set", "process.steps=32")
    assert result.exit_code == 0
    assert "(dirichlet on dirichlet-mixture, 32 steps)" in result.output


def test_validate_takes_key_value_overrides_like_plan_and_run(in_root):
    result = invoke("validate", "specs/quickstart.toml", "process.steps=32", "specs/gaussian.toml")
    assert result.exit_code == 0, result.output
    assert "(dirichlet on dirichlet-mixture, 32 steps)" in result.output
    assert "(gaussian on gaussian-mixture, 32 steps)" in result.output
    bad = invoke("validate", "specs/quickstart.toml", "process.stepz=32")
    assert bad.exit_code == 2 and "process.stepz" in bad.output
    alone = invoke("validate", "process.steps=32")
    assert alone.exit_code == 2 and "no spec file among process.steps=32" in alone.output


def test_validate_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", "nope.toml")
    assert result.exit_code == 2
    assert "error: nope.toml:1:1: spec file not found; give the path of a .toml spec" in result.output


def test_validate_unreadable_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b'[experiment]\nname = "caf\xe9"\n')
    result = invoke("validate", "latin1.toml")
    assert result.exit_code == 2
    assert "error: latin1.toml:1:1: cannot read the spec: " in result.output


def test_validate_environment_issues_are_warnings_unless_ready(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ folder here
    spec = tmp_path / "c.toml"
    spec.write_text('[experiment]\nname = "c"\n\n[process]\nfamily = "gaussian"\n\n[data]\nname = "cifar10"\n'
                    'root = "data"\n', encoding="utf-8")
    plain = invoke("validate", "c.toml")
    assert plain.exit_code == 0, plain.output
    assert "c.toml:9:1: not ready: data.root: data.root folder 'data' does not exist" in plain.output
    ready = invoke("validate", "--ready", "c.toml")
    assert ready.exit_code == 2
    assert "error: c.toml:9:1: data.root: data.root folder 'data' does not exist" in ready.output


# ------------------------------------------------------------------------------------ plan

PLANS = {
    "quickstart": ["specs/quickstart.toml"],
    "distill-dirichlet": ["specs/distill-dirichlet.toml", "devices.accelerator=cpu"],
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_plan_matches_golden(name, in_root):
    result = invoke("plan", *PLANS[name])
    assert result.exit_code == 0, result.output
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("MSTAR_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(result.output, encoding="utf-8")
    assert result.output == golden.read_text(encoding="utf-8")


def test_plan_stages_in_order(in_root):
    out = invoke("plan", "specs/distill-dirichlet.toml", "devices.accelerator=cpu", "--no-settings").output
    stages = out[out.index("Stages\n"):out.index("Devices\n")]
    names = ["train", "distill 64→32", "distill 32→16", "distill 16→8", "sample", "eval"]
    positions = [stages.index(f" {n} ") for n in names]
    assert positions == sorted(positions)
    assert "Resolved settings" not in out


def test_plan_reports_spec_errors(in_root):
    result = invoke("plan", "specs/quickstart.toml", "train.lrr=1")
    assert result.exit_code == 2
    assert "error: override 'train.lrr=1': train.lrr: unknown key 'lrr' in [train]; did you mean 'lr'?" \
        in result.output
    assert "1 error in the spec" in result.output


# ------------------------------------------------------------------------------------ list

def table_names(output: str) -> list[str]:
    """First column of a tabulate 'simple' table (after the header and the dashes)."""
    lines = output.splitlines()
    dashes = next(i for i, line in enumerate(lines) if line.startswith("---"))
    return [line.split()[0] for line in lines[dashes + 1:] if line.strip()]


def registry(what: str) -> list[str]:
    if what == "families":
        from mstar_engine.families import REGISTRY
        return sorted(REGISTRY)
    if what == "schedules":
        from mstar_engine.schedules import SCHEDULES
        return sorted(SCHEDULES)
    if what == "datasets":
        from mstar_engine.data.catalog import DATASETS
        return sorted(DATASETS)
    from mstar_engine.metrics.catalog import METRICS
    return sorted(METRICS)


@pytest.mark.parametrize("what", ["families", "datasets", "schedules", "metrics"])
def test_list_has_one_row_per_registered_name(what):
    result = invoke("list", what)
    assert result.exit_code == 0, result.output
    names = table_names(result.output)
    assert len(names) == len(set(names))
    assert sorted(names) == registry(what)
    assert len(registry(what)) >= 1


@pytest.mark.parametrize("what", ["families", "datasets", "schedules", "metrics"])
def test_list_json(what):
    result = invoke("list", what, "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    key = {"families": "family", "datasets": "dataset", "schedules": "schedule", "metrics": "metric"}[what]
    assert sorted(row[key] for row in rows) == registry(what)


def test_list_families_shows_domains_and_default_schedules():
    from mstar_engine.families import REGISTRY
    out = invoke("list", "families").output
    for line in out.splitlines()[2:]:
        name = line.split()[0]
        assert REGISTRY[name].domain in line.split()


def test_list_unknown_table():
    result = invoke("list", "couplings")
    assert result.exit_code == 2
    assert "Invalid value for" in result.output


# ------------------------------------------------------------------------------------ run and friends

SHORT_RUN = ["train.steps=12", "train.log_every=4", "train.checkpoint_every=6", "process.steps=16",
             "network.mlp.hidden=32", "network.mlp.blocks=1", "sample.num_samples=200", "eval.num_samples=200",
             "data.num_examples=1000"]


def test_run_trains_samples_and_evaluates(in_root, tmp_path):
    result = invoke("run", "specs/quickstart.toml", f"experiment.output_dir={tmp_path}", *SHORT_RUN, "--json")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "quickstart"
    for name in ("spec.toml", "spec.resolved.toml", "plan.txt", "metrics.jsonl", "results.json", "results.txt",
                 "samples/samples.npz", "checkpoints/train/latest"):
        assert (run_dir / name).exists(), name
    results = json.loads((run_dir / "results.json").read_text())
    assert {r["metric"] for r in results["results"]} == {"knn-kl", "energy"}
    assert all(math.isfinite(r["value"]) and math.isfinite(r["noise_floor"]) for r in results["results"])
    assert (run_dir / "spec.toml").read_text() == (Path("specs") / "quickstart.toml").read_text()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 3


def test_run_invalid_spec_exits_2(in_root):
    result = invoke("run", "specs/quickstart.toml", "process.steps=1")
    assert result.exit_code == 2
    assert ("error: override 'process.steps=1': process.steps: 1 is out of range: "
            "expected a value ≥ 2 and ≤ 100000") in result.output


def test_run_treats_environment_issues_as_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[experiment]\nname = "c"\n\n[process]\nfamily = "gaussian"\n\n'
                                     '[data]\nname = "cifar10"\nroot = "data"\n', encoding="utf-8")
    result = invoke("run", "c.toml")
    assert result.exit_code == 2
    assert "error: c.toml:9:1: data.root: data.root folder 'data' does not exist" in result.output


def test_bench_reports_training_speed_beside_the_plain_ddpm_step(in_root):
    result = invoke("bench", "specs/dirichlet.toml", "network.mlp.hidden=32", "network.mlp.blocks=1",
                    "data.num_examples=2000", "process.steps=8", "compare={}", "--steps", "3", "--repeats", "3", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    for key in ("train_examples_per_s", "reference_examples_per_s", "peak_memory_gib"):
        assert math.isfinite(out[key]) and out[key] > 0, key
    # a difference of two timings: non-negative by construction, their sum the time of a batch
    sampling = (out["sample_s_per_network_eval"], out["sample_s_per_batch"])
    assert all(math.isfinite(v) and v >= 0 for v in sampling) and sum(sampling) > 0
    # three rounds of 16 timed steps (3 rounded up to a roll-out block); each round's ratio from its own pair
    assert out["repeats"] == 3 and out["timed_steps"] == 16
    assert out["ratios"] == pytest.approx([r / o for o, r in zip(out["step_seconds"], out["reference_step_seconds"])])
    assert out["ratio"] == pytest.approx(sorted(out["ratios"])[1])
    assert out["ratio_low"] == min(out["ratios"]) and out["ratio_high"] == max(out["ratios"])
    assert 0 < out["input_share"] < 1
    assert [r["stage"] for r in out["estimates"]] == ["train", "sample", "eval"]
    assert out["estimates"][0]["seconds"] > 0 and out["estimates"][1]["seconds"] > 0


@pytest.mark.parametrize("args", [
    ["frobnicate"],
    ["validate", "--frobnicate", "specs/quickstart.toml"],
    ["validate"],
    ["plan"],
    ["run", "--resume", "sometimes", "specs/quickstart.toml"],
    ["distill", "runs/x"],
])
def test_usage_errors_exit_2(args, in_root):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Usage: " in result.output


def test_help_and_version():
    assert invoke("--help").exit_code == 0
    result = invoke("--version")
    assert result.exit_code == 0 and "version" in result.output


def test_run_dry_run_prints_the_plan():
    from click.testing import CliRunner
    from mstar_cli.main import cli
    spec = str(Path(__file__).parents[2] / "specs" / "quickstart.toml")
    dry = CliRunner().invoke(cli, ["run", spec, "--dry-run"])
    plan = CliRunner().invoke(cli, ["plan", spec])
    assert dry.exit_code == 0 and dry.output == plan.output and "Stages" in dry.output
