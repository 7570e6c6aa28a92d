"""The spec's ``[compare]`` table: variants trained and evaluated beside the spec, one table.

The quick start's two variants (star-shaped, Gaussian DDPM) are run once per module with tiny
settings (the command-line overrides carry over to every variant).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.app.report import comparison_table

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "specs" / "quickstart.toml"
TINY = ["train.steps=8", "train.log_every=4", "train.checkpoint_every=8", "sample.num_samples=40",
        "eval.num_samples=40", "process.steps=8", "network.mlp.hidden=32", "network.mlp.blocks=1",
        "data.num_examples=1000"]
VARIANTS = {  # name → (family, coupling, inputs), as the quick start's [compare] table makes them
    "star-shaped": ("dirichlet", "independent", "tail"),
    "gaussian-ddpm": ("gaussian", "ddpm", "state"),
}


def invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and body rows of a github-style table."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    return split(lines[0]), [split(line) for line in lines[2:]]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    result = invoke("run", QUICKSTART, *TINY, f"experiment.output_dir={out}")
    assert result.exit_code == 0, result.output
    return out / "quickstart", result


def test_every_variant_is_a_run_of_its_own(compared):
    from mstar_engine import load_run

    run_dir, _ = compared
    assert sorted(p.name for p in (run_dir / "compare").iterdir()) == sorted(VARIANTS)
    for name, (family, coupling, inputs) in VARIANTS.items():
        vdir = run_dir / "compare" / name
        results = json.loads((vdir / "results.json").read_text())
        assert (results["experiment"], results["family"], results["coupling"], results["inputs"]) == \
            (name, family, coupling, inputs)
        assert {r["metric"] for r in results["results"]} == {"knn-kl", "energy"}
        assert all(math.isfinite(r["value"]) and math.isfinite(r["noise_floor"]) for r in results["results"])
        # the command-line overrides reached the variant too, and it has no comparisons of its own
        run = load_run(vdir)
        assert run.step == 8 and run.spec.process.steps == 8 and run.spec.compare == {}
        assert run.spec.process.family == family
        assert not (vdir / "compare").exists() and not (vdir / "comparison.txt").exists()


def test_side_by_side_gives_the_results_of_one_after_the_other(compared, tmp_path):
    """devices.jobs = 2: the three models in two spawned processes at a time (log lines named)."""
    run_dir, _ = compared
    result = invoke("run", QUICKSTART, *TINY, f"experiment.output_dir={tmp_path}", "devices.jobs=2")
    assert result.exit_code == 0, result.output
    assert "3 models, 2 at a time" in result.output

    def values(folder):
        res = json.loads((folder / "results.json").read_text())
        return {(name, r["metric"]): r["value"] for name, part in [("spec", res), *res["compare"].items()]
                for r in part["results"]}
    side_by_side, one_after_the_other = values(tmp_path / "quickstart"), values(run_dir)
    assert list(side_by_side) == list(one_after_the_other)
    assert side_by_side == pytest.approx(one_after_the_other)
    assert (tmp_path / "quickstart" / "comparison.txt").read_text() == (run_dir / "comparison.txt").read_text()


def test_main_results_hold_the_variants(compared):
    run_dir, _ = compared
    results = json.loads((run_dir / "results.json").read_text())
    assert results["family"] == "dirichlet" and results["coupling"] == "ddpm"
    assert list(results["compare"]) == list(VARIANTS)  # in the order of the spec
    for name in VARIANTS:
        assert results["compare"][name] == json.loads((run_dir / "compare" / name / "results.json").read_text())


def test_printed_table_has_one_row_per_model_and_the_noise_floor(compared):
    run_dir, result = compared
    printed = result.stdout
    assert (run_dir / "comparison.txt").read_text() == printed
    assert printed.startswith("quickstart on dirichlet-mixture: lower is better\n")
    header, rows = table(printed)
    assert header == ["model", "family", "coupling", "inputs", "knn-kl (8 steps)", "energy (8 steps)"]
    assert [r[0] for r in rows] == ["quickstart (the spec)", "star-shaped", "gaussian-ddpm", "noise floor (40 samples)"]
    main = json.loads((run_dir / "results.json").read_text())
    models = {"quickstart (the spec)": main, **main["compare"]}
    for row in rows[:-1]:
        res = models[row[0]]
        assert row[1:4] == [res["family"], res["coupling"], res["inputs"]]
        values = {r["metric"]: r["value"] for r in res["results"]}
        assert row[4:] == [f"{values['knn-kl']:.4f}", f"{values['energy']:.4f}"]
    floors = {r["metric"]: r["noise_floor"] for r in main["results"]}
    assert rows[-1] == ["noise floor (40 samples)", "", "", "", f"{floors['knn-kl']:.4f}", f"{floors['energy']:.4f}"]


def test_a_variant_loads_with_sample_and_eval(compared, tmp_path):
    run_dir, _ = compared
    vdir = run_dir / "compare" / "gaussian-ddpm"
    result = invoke("sample", vdir, "-n", "5", "--steps", "2", "--out", tmp_path / "g.npy")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.npy").is_file()
    result = invoke("eval", vdir, "--steps", "2", "--metrics", "energy", "-n", "20", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["family"] == "gaussian"


# ------------------------------------------------------------------------------------ validate and plan

def _spec_with(tmp_path: Path, line: str) -> tuple[Path, int]:
    """The quick start with one more [compare] entry; returns the file and that entry's line number."""
    text = QUICKSTART.read_text(encoding="utf-8")
    assert text.rstrip().splitlines()[-1].startswith(("gaussian-ddpm", " ")), "[compare] must end the file"
    text = text.rstrip("\n") + "\n" + line + "\n"
    path = tmp_path / "q.toml"
    path.write_text(text, encoding="utf-8")
    return path, len(text.splitlines())


def test_validate_reports_a_bad_variant_override(tmp_path):
    path, line = _spec_with(tmp_path, 'bad = ["process.coupling.kind=indep"]')
    result = invoke("validate", path)
    assert result.exit_code == 2, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"error: {path}:{line}:1: process.coupling.kind: in [compare] bad: ")
    assert "'indep'" in errors[0] and "did you mean 'independent'" in errors[0]
    assert f"FAIL {path}: 1 error" in result.output
    # run refuses it before computing anything
    run = invoke("run", path, "experiment.output_dir=" + str(tmp_path / "out"))
    assert run.exit_code == 2 and "in [compare] bad" in run.output
    assert not (tmp_path / "out").exists()


def test_validate_reports_a_bad_variant_given_as_an_override():
    result = invoke("validate", QUICKSTART, "--set", 'compare={bad=["train.lrr=1"]}')
    assert result.exit_code == 2, result.output
    assert "in [compare] bad: unknown key 'lrr' in [train]; did you mean 'lr'?" in result.output


def test_validate_reports_a_bad_variant_name(tmp_path):
    path, line = _spec_with(tmp_path, '"bad name" = []')
    result = invoke("validate", path)
    assert result.exit_code == 2, result.output
    assert f"error: {path}:{line}:1: " in result.output
    assert "'bad name' is not a valid name" in result.output


def test_validate_accepts_a_good_extra_variant(tmp_path):
    path, _ = _spec_with(tmp_path, 'constant = ["process.coupling.kind=constant", "process.coupling.rho=0.5"]')
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"OK {path}: ")


def test_validate_reports_a_variant_that_breaks_a_cross_key_check(tmp_path):
    """Each override is valid alone, the variant as a whole is not (a constant coupling needs rho)."""
    path, _ = _spec_with(tmp_path, 'constant = ["process.coupling.kind=constant"]')
    result = invoke("validate", path)
    assert result.exit_code == 2, result.output
    assert "process.coupling.rho: in [compare] constant: a constant coupling needs rho" in result.output


def test_plan_lists_one_compare_stage_per_variant():
    result = invoke("plan", QUICKSTART, "--no-settings")
    assert result.exit_code == 0, result.output
    stages = result.output[result.output.index("Stages\n"):result.output.index("Devices\n")]
    names = ["train", "sample", "eval", "compare star-shaped", "compare gaussian-ddpm"]
    positions = [stages.index(f" {n} ") for n in names]
    assert positions == sorted(positions)
    assert stages.count(" compare ") == 2
    assert "runs/quickstart/compare/star-shaped" in stages
    assert "runs/quickstart/compare/gaussian-ddpm" in stages
    assert "runs/quickstart/comparison.txt" in result.output


def test_plan_without_variants_has_no_compare_stage():
    result = invoke("plan", QUICKSTART, "compare={}", "--no-settings")
    assert result.exit_code == 0, result.output
    assert " compare " not in result.output and "comparison.txt" not in result.output


# ------------------------------------------------------------------------------------ comparison_table

def _res(name, family, coupling, inputs, rows):
    return {"experiment": name, "family": family, "data": "toy-data", "coupling": coupling, "inputs": inputs,
            "results": [{"metric": m, "steps": s, "value": v, "std": 0.0, "noise_floor": f, "samples": 10}
                        for m, s, v, f in rows]}


def test_comparison_table_by_hand():
    results = _res("main", "dirichlet", "ddpm", "tail+state", [("energy", 4, 0.5, 0.01), ("mmd", 4, 0.25, 0.002)])
    results["compare"] = {
        "b": _res("b", "gaussian", "ddpm", "state", [("energy", 4, 1.23456, 0.09), ("energy", 8, 2.0, 0.03)]),
        "c": _res("c", "dirichlet", "independent", "tail", [("mmd", 4, 0.125, 0.5)]),
    }
    text = comparison_table(results)
    assert text.splitlines()[0] == "main on toy-data: lower is better"
    header, rows = table(text)
    # each metric's columns together, its step counts ascending
    assert header == ["model", "family", "coupling", "inputs", "energy (4 steps)", "energy (8 steps)",
                      "mmd (4 steps)"]
    assert rows == [
        ["main (the spec)", "dirichlet", "ddpm", "tail+state", "0.5000", "-", "0.2500"],
        ["b", "gaussian", "ddpm", "state", "1.2346", "2.0000", "-"],
        ["c", "dirichlet", "independent", "tail", "-", "-", "0.1250"],
        # the main model's floor wins where several models have one
        ["noise floor (10 samples)", "", "", "", "0.0100", "0.0300", "0.0020"],
    ]


def test_comparison_table_without_variants():
    text = comparison_table(_res("solo", "beta", "independent", "tail", [("knn-kl", 2, 3.0, 0.1)]))
    header, rows = table(text)
    assert header[4:] == ["knn-kl (2 steps)"]
    assert rows == [["solo (the spec)", "beta", "independent", "tail", "3.0000"], ["noise floor (10 samples)", "", "", "", "0.1000"]]
