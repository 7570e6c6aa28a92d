"""A distillation interrupted in the middle of a stage and resumed (by ``mstar distill`` or by
``mstar run`` again) ends with the same students, bit for bit, as one never interrupted; ``--resume
never`` redoes the stages; changed settings on a finished run are refused clearly.

Tiny runs: a 16-step Dirichlet teacher (20 optimiser steps of a 32-wide MLP) distilled 16 → 8 → 4
with 12 steps per stage, a checkpoint every 4 steps. The interruption is an exception raised from
inside the stage loop (the target computation) at a chosen step.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

import mstar_engine.distill.loop as loop
import mstar_engine.train.stage as stage
from mstar_cli.main import cli
from mstar_engine.util import interrupt
from mstar_engine.train.checkpoint import latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "distill-dirichlet.toml"
NAME = "distill-dirichlet"
PER_STAGE = 12
SHORT = ["process.steps=16", "train.steps=20", "train.batch_size=32", "train.checkpoint_every=4",
         "train.log_every=4", "train.warmup_steps=0", "data.num_examples=600", "network.mlp.hidden=32",
         "network.mlp.blocks=1", "network.mlp.time_dim=8", "distill.to=4", f"distill.steps_per_stage={PER_STAGE}",
         "distill.batch_size=16", "sample.num_samples=10", "sample.batch_size=10", "eval.metrics=[]",
         "eval.steps=[16, 4]"]
STAGES = (8, 4)


class Interrupted(RuntimeError):
    """Stands for a crash (or Ctrl-C) in the middle of a distillation stage."""


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def run(out: Path, *extra: str):
    return invoke("run", SPEC, *SHORT, f"experiment.output_dir={out}", *extra)


def interrupt_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th distillation step (1-based, counted over all stages) raise."""
    real, calls = loop.distill_targets, [0]

    def targets(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise Interrupted(f"interrupted at distillation step {call}")
        return real(*args, **kwargs)
    monkeypatch.setattr(loop, "distill_targets", targets)


def student(run_dir: Path, n: int) -> dict:
    path = latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}")
    assert path is not None, f"no checkpoint in distill-{n}"
    return torch.load(path, weights_only=True)


def assert_same_students(a: Path, b: Path) -> None:
    for n in STAGES:
        sa, sb = student(a, n), student(b, n)
        assert sa["step"] == sb["step"] == PER_STAGE and sa["complete"] and sb["complete"]
        assert sa["model"].keys() == sb["model"].keys()
        differing = [key for key in sb["model"] if not torch.equal(sa["model"][key], sb["model"][key])]
        assert not differing, f"distill-{n}: {', '.join(differing)} differ"
        for key in ("evaluations", "teacher_evaluations"):
            assert sa[key] == sb[key]
        assert torch.equal(sa["sampling_rho"], sb["sampling_rho"])


def log_lines(run_dir: Path) -> list[tuple]:
    """distill.jsonl without the wall-clock seconds."""
    lines = [json.loads(line) for line in (run_dir / "distill.jsonl").read_text().splitlines()]
    for line in lines:
        assert math.isfinite(line["loss"]) and math.isfinite(line["lr"])
    return [(r["stage"], r["step"], r["loss"], r["lr"]) for r in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference")
    result = run(out)
    assert result.exit_code == 0, result.output
    run_dir = out / NAME
    for n in STAGES:
        assert student(run_dir, n)["complete"]
    assert [(s, k) for s, k, *_ in log_lines(run_dir)] == [(s, k) for s in STAGES for k in (4, 8, 12)]
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy" / NAME
    shutil.copytree(run_dir, target)
    return target


def test_interrupted_first_stage_resumed_by_mstar_distill_is_exact(reference, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 7)  # stage 16 → 8 at step 6: its last checkpoint is step 4
    result = run(tmp_path)
    assert result.exit_code == 1, result.output
    assert "interrupted at distillation step 7" in result.output
    run_dir = tmp_path / NAME
    assert (run_dir / "checkpoints" / "distill-8" / "latest").read_text().strip() == "step-00000004.pt"
    assert not (run_dir / "checkpoints" / "distill-4").exists()
    monkeypatch.undo()

    result = invoke("distill", run_dir, "--to", "4")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "step 4" in result.output
    assert_same_students(run_dir, reference)
    assert log_lines(run_dir) == log_lines(reference)  # the lines after the checkpoint were not kept twice


def test_interrupted_second_stage_resumed_by_mstar_run_is_exact(reference, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, PER_STAGE + 11)  # stage 8 → 4 at step 10: its last checkpoint is step 8
    result = run(tmp_path)
    assert result.exit_code == 1, result.output
    run_dir = tmp_path / NAME
    assert student(run_dir, 8)["complete"]
    assert (run_dir / "checkpoints" / "distill-4" / "latest").read_text().strip() == "step-00000008.pt"
    monkeypatch.undo()

    result = run(tmp_path)
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output
    assert "distill 16→8: step" not in result.output  # a finished stage is not repeated
    assert_same_students(run_dir, reference)
    assert log_lines(run_dir) == log_lines(reference)


def test_interrupted_twice_in_one_stage_is_still_exact(reference, tmp_path, monkeypatch):
    interrupt_at(monkeypatch, 3)  # before the first checkpoint of stage 16 → 8
    assert run(tmp_path).exit_code == 1
    run_dir = tmp_path / NAME
    assert latest_checkpoint(run_dir / "checkpoints" / "distill-8") is None
    monkeypatch.undo()
    interrupt_at(monkeypatch, 10)  # a fresh count: stage 16 → 8 at step 9 (restarted from step 0)
    assert invoke("distill", run_dir, "--to", "4").exit_code == 1
    assert (run_dir / "checkpoints" / "distill-8" / "latest").read_text().strip() == "step-00000008.pt"
    monkeypatch.undo()
    result = invoke("distill", run_dir, "--to", "4")
    assert result.exit_code == 0, result.output
    assert_same_students(run_dir, reference)
    assert log_lines(run_dir) == log_lines(reference)


def test_resume_never_redoes_every_stage(reference, tmp_path):
    run_dir = copy_run(reference, tmp_path)
    for n in STAGES:  # mark the old checkpoints: they must be replaced, not reused
        folder = run_dir / "checkpoints" / f"distill-{n}"
        state = torch.load(latest_checkpoint(folder), weights_only=True)
        state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
        torch.save(state, latest_checkpoint(folder))
    old = {n: latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}").read_bytes() for n in STAGES}
    result = invoke("distill", run_dir, "--to", "4", "--resume", "never")
    assert result.exit_code == 0, result.output
    assert "resumed from" not in result.output
    for n in STAGES:  # the earlier students are moved aside, never deleted
        (aside,) = (run_dir / "checkpoints" / "replaced").glob(f"distill-{n}.replaced-*")
        assert latest_checkpoint(aside).read_bytes() == old[n]
    for n, teacher in ((8, 16), (4, 8)):
        assert f"distill {teacher}→{n}: step {PER_STAGE}/{PER_STAGE}" in result.output
        assert (run_dir / "checkpoints" / f"distill-{n}" / "latest").is_file()
    assert_same_students(run_dir, reference)  # loadable, and redone exactly as the first time
    assert log_lines(run_dir) == log_lines(reference)
    from mstar_engine import load_run
    model = load_run(run_dir, run_dir / "checkpoints" / "distill-4").model
    assert model.steps == 4


def test_resume_auto_on_a_finished_run_does_not_redo_the_stages(reference, tmp_path):
    run_dir = copy_run(reference, tmp_path)
    before = {n: latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}").read_bytes() for n in STAGES}
    result = invoke("distill", run_dir, "--to", "4")
    assert result.exit_code == 0, result.output
    assert "distill 16→8: step" not in result.output and "distill 8→4: step" not in result.output
    for n in STAGES:
        assert latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}").read_bytes() == before[n]
    assert log_lines(run_dir) == log_lines(reference)


def test_changed_steps_per_stage_on_a_finished_run_is_refused(reference, tmp_path):
    run_dir = copy_run(reference, tmp_path)
    before = latest_checkpoint(run_dir / "checkpoints" / "distill-8").read_bytes()
    result = invoke("distill", run_dir, "--to", "4", "distill.steps_per_stage=8")
    assert result.exit_code == 1, result.output
    assert "--resume never" in result.output
    assert "steps_per_stage" in result.output
    assert latest_checkpoint(run_dir / "checkpoints" / "distill-8").read_bytes() == before

    result = invoke("distill", run_dir, "--to", "4", "distill.steps_per_stage=8", "--resume", "never")
    assert result.exit_code == 0, result.output
    for n in STAGES:
        assert student(run_dir, n)["step"] == 8


def test_a_longer_trained_teacher_is_not_served_stale_students(tmp_path):
    """Training resumed to more steps (train.steps is a resumable change) makes a new teacher:
    the students distilled from the old one must not be reused as its students. Either the stages
    are redone (then they equal a run trained that long from the start) or the run stops with a
    clear message about the teacher."""
    direct, longer = tmp_path / "direct", tmp_path / "longer"
    assert run(direct, "train.steps=24").exit_code == 0
    assert run(longer).exit_code == 0
    assert student(longer / NAME, 4)["complete"]
    result = run(longer, "train.steps=24")
    assert "resumed from" in result.output  # training went on from step 20 to 24
    if result.exit_code == 0:
        assert_same_students(longer / NAME, direct / NAME)
    else:
        assert result.exit_code == 1, result.output
        assert "teacher" in result.output and "--resume never" in result.output, result.output


def test_a_lower_to_adds_stages_after_the_finished_ones(reference, tmp_path):
    run_dir = copy_run(reference, tmp_path)
    before = {n: latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}").read_bytes() for n in STAGES}
    result = invoke("distill", run_dir, "--to", "2")
    assert result.exit_code == 0, result.output
    assert "distill 16→8: step" not in result.output and "distill 8→4: step" not in result.output
    assert f"distill 4→2: step {PER_STAGE}/{PER_STAGE}" in result.output
    for n in STAGES:
        assert latest_checkpoint(run_dir / "checkpoints" / f"distill-{n}").read_bytes() == before[n]
    state = student(run_dir, 2)
    assert state["complete"] and state["evaluations"] == 2 and state["teacher_evaluations"] == 4
    assert [(s, k) for s, k, *_ in log_lines(run_dir)] == [(s, k) for s in (8, 4, 2) for k in (4, 8, 12)]


@pytest.mark.parametrize("coupling", ["deterministic", "learned"])
def test_mstar_distill_on_a_trained_run_equals_mstar_run_with_distill(tmp_path, coupling):
    """The teacher loaded from its checkpoint (mstar distill) and the one still in memory at the
    end of training (mstar run) make the same students, bit for bit."""
    text = SPEC.read_text()
    plain = tmp_path / "plain.toml"  # the same spec without its [distill] section
    plain.write_text(text[:text.index("[distill]")] + text[text.index("[eval]"):])
    assert "[distill]" not in plain.read_text()
    kind = f"process.coupling.kind={coupling}"
    with_distill = run(tmp_path / "a", kind)
    assert with_distill.exit_code == 0, with_distill.output
    trained = invoke("run", plain, *[o for o in SHORT if not o.startswith("distill.")], kind,
                     f"experiment.output_dir={tmp_path / 'b'}")
    assert trained.exit_code == 0, trained.output
    assert not (tmp_path / "b" / NAME / "checkpoints" / "distill-8").exists()
    result = invoke("distill", tmp_path / "b" / NAME, "--to", "4", *[o for o in SHORT if o.startswith("distill.")
                                                                    and not o.startswith("distill.to")])
    assert result.exit_code == 0, result.output
    assert_same_students(tmp_path / "b" / NAME, tmp_path / "a" / NAME)


def test_ctrl_c_in_a_stage_checkpoints_that_step_and_resumes_exactly(reference, tmp_path, monkeypatch):
    """Ctrl-C seen at step 7 of stage 16 → 8 (its checkpoints are at 4, 8, 12): that step finishes,
    is checkpointed, the command exits with 130, and mstar distill continues it exactly."""
    calls = [0]  # counted over the 20 training steps first

    def requested():
        calls[0] += 1
        return calls[0] == 20 + 7
    monkeypatch.setattr(stage, "interrupt", SimpleNamespace(requested=requested, Interrupted=interrupt.Interrupted,
                                                           graceful_stop=interrupt.graceful_stop))
    result = run(tmp_path)
    assert result.exit_code == 130, result.output
    assert "interrupted: stopped by Ctrl-C after distill 16→8 step 7 of 12" in result.output
    run_dir = tmp_path / NAME
    assert (run_dir / "checkpoints" / "distill-8" / "latest").read_text().strip() == "step-00000007.pt"
    monkeypatch.undo()

    result = invoke("distill", run_dir, "--to", "4")
    assert result.exit_code == 0, result.output
    assert "resumed from" in result.output and "step 7" in result.output
    assert_same_students(run_dir, reference)
    assert log_lines(run_dir) == log_lines(reference)
