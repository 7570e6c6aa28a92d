"""Progressive distillation end to end through the CLI: ``mstar run`` with ``[distill]``,
``mstar distill RUN --to K`` on a run trained without it, the students in ``mstar eval`` and
``mstar sample``, the digits images, and the errors of ``mstar distill``.

Tiny runs (T = 16 or 8 steps, a few optimiser steps, small networks): the point is the plumbing,
not that the students learn.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.train.checkpoint import latest_checkpoint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["train.batch_size=32", "train.checkpoint_every=4", "train.log_every=4", "train.warmup_steps=0",
          "data.num_examples=600", "network.mlp.hidden=32", "network.mlp.blocks=1", "network.mlp.time_dim=8",
          "sample.num_samples=20", "sample.batch_size=20", "eval.num_samples=20", "eval.batch_size=20",
          "eval.knn_k=3"]
PER_STAGE = 10  # not a multiple of train.log_every: the last step of a stage is logged too
LOGGED = [4, 8, 10]


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def students_of(run_dir: Path) -> list[int]:
    return sorted((int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("distill-*")), reverse=True)


def check_students(run_dir: Path, counts: list[int], teacher_steps: int) -> None:
    assert students_of(run_dir) == counts
    teachers = [teacher_steps, *counts[:-1]]
    for n, teacher in zip(counts, teachers):
        folder = run_dir / "checkpoints" / f"distill-{n}"
        assert (folder / "latest").is_file()
        state = torch.load(latest_checkpoint(folder), weights_only=True)
        assert state["complete"] and state["step"] == PER_STAGE
        assert state["evaluations"] == n and state["teacher_evaluations"] == teacher
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def check_log(run_dir: Path, counts: list[int]) -> None:
    lines = [json.loads(line) for line in (run_dir / "distill.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in lines] == [(n, k) for n in counts for k in LOGGED]
    for r in lines:
        assert math.isfinite(r["loss"]) and r["loss"] >= 0
        assert math.isfinite(r["lr"]) and r["lr"] > 0


def check_results(results: dict, T: int, counts: list[int], metrics: set[str], eval_steps: set[int]) -> None:
    rows = results["results"]
    assert {r["metric"] for r in rows} == metrics
    for metric in metrics:
        mine = [r for r in rows if r["metric"] == metric]
        assert {r["steps"] for r in mine if r["model"] == "teacher"} == {T, *counts, *eval_steps}
        assert sorted((r["steps"] for r in mine if r["model"] == "student"), reverse=True) == counts
    assert {r["model"] for r in rows} == {"teacher", "student"}
    for r in rows:
        assert math.isfinite(r["value"]) and math.isfinite(r["noise_floor"]) and math.isfinite(r["std"]), r
        assert r["samples"] == 20


def on_simplex(x: np.ndarray, d: int) -> None:
    assert x.shape[1:] == (d,)
    assert np.isfinite(x).all() and (x >= 0).all()
    np.testing.assert_allclose(x.sum(-1), 1.0, rtol=0, atol=1e-6)


# --- a Dirichlet run with [distill] -------------------------------------------------------------

DIRICHLET = [*COMMON, "process.steps=16", "train.steps=12", "distill.to=4", f"distill.steps_per_stage={PER_STAGE}",
             "distill.batch_size=16", 'eval.metrics=["knn-kl", "energy"]', "eval.steps=[4]"]


@pytest.fixture(scope="module")
def dirichlet(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("dirichlet")
    result = invoke("run", ROOT / "specs" / "distill-dirichlet.toml", *DIRICHLET, f"experiment.output_dir={out}",
                    "--json")
    assert result.exit_code == 0, result.output
    return out / "distill-dirichlet", json.loads(result.stdout)


def test_run_with_distill_writes_every_stage(dirichlet):
    run_dir, printed = dirichlet
    check_students(run_dir, [8, 4], 16)
    check_log(run_dir, [8, 4])
    results = json.loads((run_dir / "results.json").read_text())
    assert printed == results
    check_results(results, 16, [8, 4], {"knn-kl", "energy"}, {4})
    student_rows = [r for r in results["results"] if r["model"] == "student"]
    assert all(r["seconds"] >= 0 for r in student_rows)
    assert "student" in (run_dir / "results.txt").read_text()
    with np.load(run_dir / "samples" / "samples.npz") as archive:  # drawn by the 4-step student
        on_simplex(archive["samples"], 3)
    spec = tomllib.loads((run_dir / "spec.resolved.toml").read_text())
    assert spec["distill"]["stages"] == [8, 4]
    # the shipped recipe: a state-input teacher sampled with ρ = 1, the landing target solved in the simplex's chart
    assert spec["distill"]["target"] == "landing" and spec["distill"]["coupling"] == "deterministic"


def test_eval_shows_the_students(dirichlet):
    run_dir, _ = dirichlet
    result = invoke("eval", run_dir, "--json")
    assert result.exit_code == 0, result.output
    check_results(json.loads(result.stdout), 16, [8, 4], {"knn-kl", "energy"}, {4})
    table = invoke("eval", run_dir, "--metrics", "energy")
    assert table.exit_code == 0, table.output
    assert "student" in table.stdout and "teacher" in table.stdout


@pytest.mark.parametrize("n", [8, 4])
def test_sample_a_student_checkpoint_file(dirichlet, tmp_path, n):
    run_dir, _ = dirichlet
    ckpt = latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}")
    out = tmp_path / "x.npy"
    result = invoke("sample", run_dir, "--checkpoint", ckpt, "-n", "10", "--out", out)
    assert result.exit_code == 0, result.output
    x = np.load(out)
    assert x.shape == (10, 3)
    on_simplex(x, 3)
    assert f"({n} network evaluations" in result.output  # a student samples with its own count


def test_sample_a_student_checkpoint_folder(dirichlet, tmp_path):
    """``--checkpoint RUN/checkpoints/distill-N``: the folder's latest checkpoint (load_run takes a
    folder, so the CLI must let one through)."""
    run_dir, _ = dirichlet
    out = tmp_path / "x.npy"
    result = invoke("sample", run_dir, "--checkpoint", run_dir / "checkpoints" / "distill-4", "-n", "10", "--out", out)
    assert result.exit_code == 0, result.output
    on_simplex(np.load(out), 3)


def test_students_sample_differently_from_the_teacher(dirichlet):
    from mstar_engine import load_run
    run_dir, _ = dirichlet
    teacher = load_run(run_dir)
    student = load_run(run_dir, latest_checkpoint(run_dir / "checkpoints" / "distill-4"))
    assert teacher.model.steps is None and student.model.steps == 4
    a, b = teacher.sample(10, 4, seed=1), student.sample(10, 4, seed=1)
    on_simplex(a.numpy(), 3)
    on_simplex(b.numpy(), 3)
    assert not torch.equal(a, b)


# --- mstar distill on a Gaussian run trained without [distill] -----------------------------------

GAUSSIAN = [*COMMON, "process.steps=8", "train.steps=8", "process.inputs=state", "eval.metrics=[\"mmd\"]"]


@pytest.fixture(scope="module")
def gaussian(tmp_path_factory) -> tuple[Path, object]:
    """A run trained without [distill], then ``mstar distill RUN --to 2`` (the result returned)."""
    out = tmp_path_factory.mktemp("gaussian")
    result = invoke("run", ROOT / "specs" / "gaussian.toml", *GAUSSIAN, f"experiment.output_dir={out}")
    assert result.exit_code == 0, result.output
    run_dir = out / "gaussian"
    assert students_of(run_dir) == []
    assert "distill" not in tomllib.loads((run_dir / "spec.resolved.toml").read_text())
    distilled = invoke("distill", run_dir, "--to", "2", f"distill.steps_per_stage={PER_STAGE}",
                       "distill.batch_size=16", "--json")
    return run_dir, distilled


def test_distill_a_trained_run(gaussian):
    run_dir, result = gaussian
    assert result.exit_code == 0, result.output
    check_students(run_dir, [4, 2], 8)
    check_log(run_dir, [4, 2])
    results = json.loads((run_dir / "results.json").read_text())
    assert json.loads(result.stdout) == results
    check_results(results, 8, [4, 2], {"mmd"}, {8})
    assert "student" in (run_dir / "results.txt").read_text()
    spec = tomllib.loads((run_dir / "spec.resolved.toml").read_text())  # the run now records its [distill]
    assert spec["distill"]["target"] == "landing" and spec["distill"]["coupling"] == "deterministic"
    assert spec["distill"]["steps_per_stage"] == PER_STAGE and spec["distill"]["stages"] == [4, 2]
    state = torch.load(latest_checkpoint(run_dir / "checkpoints" / "distill-2"), weights_only=True)
    assert torch.equal(state["sampling_rho"], torch.ones(9, dtype=torch.float64))  # deterministic coupling


def test_eval_after_distill_shows_the_students(gaussian):
    run_dir, _ = gaussian
    result = invoke("eval", run_dir, "--json")
    assert result.exit_code == 0, result.output
    check_results(json.loads(result.stdout), 8, [4, 2], {"mmd"}, {8})


@pytest.mark.parametrize("n", [4, 2])
def test_sample_a_distilled_student(gaussian, tmp_path, n):
    """The run's sample.steps is its T = 8 (trained without [distill]); a student checkpoint
    samples with its own number of evaluations."""
    run_dir, _ = gaussian
    out = tmp_path / "x.npy"
    result = invoke("sample", run_dir, "--checkpoint", latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}"),
                    "-n", "10", "--out", out)
    assert result.exit_code == 0, result.output
    x = np.load(out)
    assert x.shape == (10, 2) and np.isfinite(x).all()
    assert f"({n} network evaluations" in result.output


def test_eval_a_student_checkpoint_uses_its_evaluations(gaussian):
    """``mstar eval RUN --checkpoint <student>`` measures the student at the count it was distilled
    for, not at the run's eval.steps (8, the teacher's)."""
    run_dir, _ = gaussian
    ckpt = latest_checkpoint(run_dir / "checkpoints" / "distill-2")
    result = invoke("eval", run_dir, "--checkpoint", ckpt, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["results"]
    assert rows and {r["steps"] for r in rows} == {2}, rows
    explicit = invoke("eval", run_dir, "--checkpoint", ckpt, "--steps", "2", "--json")
    assert explicit.exit_code == 0, explicit.output
    assert [r["value"] for r in json.loads(explicit.stdout)["results"]] == [r["value"] for r in rows]


# --- errors of mstar distill ---------------------------------------------------------------------

@pytest.mark.parametrize("to", ["3", "6", "16", "32"])
def test_distill_to_that_is_not_a_halving(dirichlet, to):
    run_dir, _ = dirichlet
    result = invoke("distill", run_dir, "--to", to)
    assert result.exit_code in (1, 2), result.output
    assert "8, 4, 2, 1" in result.output  # the valid choices


def test_distill_refuses_other_settings(dirichlet):
    run_dir, _ = dirichlet
    before = (run_dir / "spec.resolved.toml").read_text()
    result = invoke("distill", run_dir, "--to", "4", "train.lr=1")
    assert result.exit_code == 1, result.output
    assert "train.lr=1" in result.output and "[distill]" in result.output
    assert "only" in result.output
    assert (run_dir / "spec.resolved.toml").read_text() == before


@pytest.mark.parametrize(("override", "needle"), [
    ('distill.target="nearest"', "distill.target"),
    ("distill.steps_per_stage=0", "distill.steps_per_stage"),
    ("distill.bogus=1", "bogus"),
])
def test_distill_reports_bad_distill_settings(dirichlet, override, needle):
    run_dir, _ = dirichlet
    result = invoke("distill", run_dir, "--to", "4", override)
    assert result.exit_code == 2, result.output
    assert needle in result.output


def test_distill_of_something_that_is_not_a_run(tmp_path):
    result = invoke("distill", tmp_path / "not-a-run", "--to", "4")
    assert result.exit_code == 1, result.output
    assert "not a run directory" in result.output
    assert not (tmp_path / "not-a-run").exists()


def test_distill_of_an_unfinished_teacher(tmp_path):
    """A run whose training has not reached train.steps is refused (finish it first)."""
    out = tmp_path / "short"
    result = invoke("run", ROOT / "specs" / "distill-dirichlet.toml", *DIRICHLET, f"experiment.output_dir={out}",
                    "train.steps=4", "eval.metrics=[]", "--json")
    assert result.exit_code == 0, result.output
    run_dir = out / "distill-dirichlet"
    spec = tomllib.loads((run_dir / "spec.resolved.toml").read_text())
    spec["train"]["steps"] = 100
    (run_dir / "spec.resolved.toml").write_text(tomli_w.dumps(spec))
    result = invoke("distill", run_dir, "--to", "4", "--resume", "never")
    assert result.exit_code == 1, result.output
    assert "4 of 100" in result.output and "mstar run" in result.output


# --- images: the built-in digits -----------------------------------------------------------------

TINY_UNET = ["process.steps=8", "network.unet.channels=8", "network.unet.channel_mult=[1, 2]",
             "network.unet.res_blocks=1", "network.unet.attention_resolutions=[4]", "network.unet.head_channels=8",
             "train.batch_size=8", "train.steps=3", "train.warmup_steps=0", "train.log_every=2",
             "train.checkpoint_every=2", "sample.num_samples=4", "sample.batch_size=4", "distill.to=2",
             "distill.steps_per_stage=2", "distill.batch_size=4"]


def test_digits_run_with_distill(tmp_path):
    pytest.importorskip("sklearn")
    result = invoke("run", ROOT / "specs" / "digits.toml", *TINY_UNET, f"experiment.output_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "digits"
    assert students_of(run_dir) == [4, 2]
    for n, teacher in ((4, 8), (2, 4)):
        state = torch.load(latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}"), weights_only=True)
        assert state["complete"] and state["step"] == 2
        assert state["evaluations"] == n and state["teacher_evaluations"] == teacher
    lines = [json.loads(line) for line in (run_dir / "distill.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in lines] == [(4, 2), (2, 2)]
    assert all(math.isfinite(r["loss"]) for r in lines)
    x = np.load(run_dir / "samples" / "samples.npz")["samples"]
    assert x.shape == (4, 1, 8, 8) and np.isfinite(x).all()
    for name in ("grid.png", "trajectories.png"):
        assert (run_dir / "samples" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    grid = tmp_path / "student.png"
    sampled = invoke("sample", run_dir, "--checkpoint", latest_checkpoint(run_dir / "checkpoints" / "distill-2"),
                     "-n", "4", "--out", grid)
    assert sampled.exit_code == 0, sampled.output
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- [compare] with [distill] --------------------------------------------------------------------

def test_comparison_table_keeps_teacher_and_student_apart(tmp_path):
    """A spec with [distill] and [compare]: the comparison table shows each model's teacher and
    its student on rows of their own (``name → student``) in shared (metric, steps) columns, so
    neither overwrites the other."""
    variant = 'compare={star = ["process.coupling.kind=independent", "process.inputs=tail"]}'
    result = invoke("run", ROOT / "specs" / "distill-dirichlet.toml", *DIRICHLET, "distill.steps_per_stage=2",
                    'eval.metrics=["energy"]', "train.steps=4", variant, f"experiment.output_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "distill-dirichlet"
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["compare"]) == {"star"}
    table = (run_dir / "comparison.txt").read_text() if (run_dir / "comparison.txt").is_file() else result.stdout
    lines = [line for line in table.splitlines() if line.startswith("|")]
    headers = [h.strip() for h in lines[0].strip("|").split("|")]
    assert len(headers) == len(set(headers)), f"repeated columns: {headers}"
    rows = {c[0]: c for c in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    for name, res in (("distill-dirichlet (the spec)", results), ("star", results["compare"]["star"])):
        assert {r["model"] for r in res["results"]} == {"teacher", "student"}
        for r in res["results"]:
            row = rows[name if r["model"] == "teacher" else f"{name} → student"]
            assert row[headers.index(f"energy ({r['steps']} steps)")] == f"{r['value']:.4f}", (r, row)
