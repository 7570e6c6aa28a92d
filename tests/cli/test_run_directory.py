"""The run directory as a store no command of ours can corrupt (issue #12, defects 1-9 and the
checkpoint and output parts of 13). Each test starts from its own copy of one tiny trained run."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.rundir.lock import acquire, release
from mstar_engine.rundir.records import RecordError, append_jsonl, read_jsonl
from mstar_engine.app.runs import RunError, load_run
from mstar_engine.train.checkpoint import checkpoint_files, find_checkpoint, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "specs" / "gaussian.toml")
TINY = ["process.steps=16", "train.steps=20", "train.checkpoint_every=5", "train.log_every=5", "train.warmup_steps=0",
        "train.batch_size=32", "data.num_examples=400", "network.mlp.hidden=16", "network.mlp.blocks=1",
        "sample.num_samples=40", "eval.num_samples=40", 'eval.metrics=["energy"]', "compare={}"]


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def run(out: Path, *extra: str):
    return invoke("run", SPEC, *TINY, f"experiment.output_dir={out}", *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    result = run(out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def out(trained, tmp_path) -> Path:
    """A copy of the trained run's output folder (the run is ``out / "gaussian"``)."""
    shutil.copytree(trained, tmp_path / "out")
    return tmp_path / "out"


def files_of(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def ckpt_dir(out: Path) -> Path:
    return out / "gaussian" / "checkpoints" / "train"


# ---------------------------------------------------------------- 1. --resume never, --overwrite
def test_resume_never_over_a_run_is_refused_and_changes_nothing(out):
    before = files_of(out / "gaussian")
    result = run(out, "--resume", "never")
    assert result.exit_code == 1
    assert "already holds a run" in result.output and "--overwrite" in result.output
    assert files_of(out / "gaussian") == before


def test_overwrite_moves_the_old_run_aside_and_starts_afresh(out):
    old = files_of(out / "gaussian")
    result = run(out, "--overwrite", "train.lr=1e-4")
    assert result.exit_code == 0, result.output
    aside = list(out.glob("gaussian.replaced-*"))
    assert len(aside) == 1 and f"moved the earlier run to {aside[0]}" in result.output
    assert files_of(aside[0]) == old  # the old run, whole, where it was moved
    assert load_run(aside[0]).step == 20
    assert load_run(out / "gaussian").step == 20
    assert "lr = 0.0001" in (out / "gaussian" / "spec.resolved.toml").read_text()
    assert (ckpt_dir(out) / (ckpt_dir(out) / "latest").read_text().strip()).is_file()


def test_pruning_never_deletes_the_checkpoint_just_written_or_the_one_resumed_from(tmp_path):
    state = {"step": 0, "model": {"w": torch.zeros(2)}}
    for step in (100, 150):  # higher-numbered files of something else
        save_checkpoint(tmp_path, step, {**state, "step": step}, keep=0)
    resumed = save_checkpoint(tmp_path, 50, {**state, "step": 50}, keep=0)
    written = save_checkpoint(tmp_path, 60, {**state, "step": 60}, keep=1, protect=[resumed])
    assert written.is_file() and resumed.is_file()
    assert (tmp_path / "latest").read_text().strip() == written.name


# ----------------------------------------------------------- 2. a refused resume writes nothing
@pytest.mark.parametrize("change", ["network.mlp.hidden=32", "train.lr=1e-5"])
def test_a_refused_resume_leaves_every_file_as_it_was(out, change):
    before = files_of(out / "gaussian")
    result = run(out, change, "train.steps=30")
    assert result.exit_code == 1
    assert "different spec" in result.output and change.split("=")[0] in result.output
    assert "--overwrite" in result.output and "--resume never" not in result.output
    assert files_of(out / "gaussian") == before
    assert invoke("sample", out / "gaussian", "-n", 8).exit_code == 0


# ------------------------------------------------------------------------- 3. torn log lines
def test_a_torn_last_log_line_is_dropped_with_a_warning_on_resume(out):
    metrics = out / "gaussian" / "metrics.jsonl"
    with metrics.open("a") as fh:
        fh.write('{"step": 25, "lo')
    result = run(out, "train.steps=30")
    assert result.exit_code == 0, result.output
    assert f"{metrics}:5: dropped a torn last line" in result.output
    steps = [r["step"] for r in read_jsonl(metrics)]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_a_bad_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(RecordError, match=rf"{log}:2: not a JSON record"):
        read_jsonl(log)


def test_appending_after_a_torn_line_cuts_it_off(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "lo')
    append_jsonl(log, [{"step": 2}])
    assert [r["step"] for r in read_jsonl(log)] == [1, 2]


# ------------------------------------------------------------------------ 4. one writer at once
def test_a_second_writer_is_refused_with_the_holder_named(out):
    fd = acquire(out / "gaussian", "run")
    try:
        before = files_of(out / "gaussian")
        for result in (run(out, "train.steps=30"), invoke("distill", out / "gaussian", "--to", 8)):
            assert result.exit_code == 1
            assert f"pid {os.getpid()} on host {socket.gethostname()}" in result.output
            assert files_of(out / "gaussian") == before
    finally:
        release(fd)
    assert run(out, "train.steps=30").exit_code == 0


def test_the_lock_of_a_killed_process_is_taken_over(out):
    pid = os.fork()
    if pid == 0:  # a writer that dies holding the lock
        acquire(out / "gaussian", "run")
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    assert str(pid) in (out / "gaussian" / ".lock").read_text()
    result = run(out, "train.steps=30")
    assert result.exit_code == 0, result.output


# ------------------------------------------------------- 5, 6. checkpoints found without trust
def test_a_missing_latest_pointer_does_not_hide_the_checkpoints(out):
    (ckpt_dir(out) / "latest").unlink()
    result = invoke("sample", out / "gaussian", "-n", 8)
    assert result.exit_code == 0 and "step 20" in result.output
    result = run(out, "train.steps=30")
    assert result.exit_code == 0 and "at step 20" in result.output, result.output
    assert [p.name for p in checkpoint_files(ckpt_dir(out))][:2] == ["step-00000030.pt", "step-00000025.pt"]


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(p.read_bytes()[:2000]), "not a complete checkpoint"),
    (lambda p: p.write_bytes(os.urandom(4000)), "not a complete checkpoint"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(out, damage, reason):
    newest = ckpt_dir(out) / "step-00000020.pt"
    damage(newest)
    result = invoke("sample", out / "gaussian", "-n", 8)
    assert result.exit_code == 0 and "step 15" in result.output
    assert f"skipped {newest}: {reason}" in result.output
    assert "weights_only" not in result.output and "Errno" not in result.output
    result = run(out)
    assert result.exit_code == 0 and "at step 15" in result.output
    assert (ckpt_dir(out) / "step-00000020.pt.bad").is_file()  # kept for inspection, never read again
    assert load_checkpoint(ckpt_dir(out) / "step-00000020.pt")["step"] == 20


# ------------------------------------------------------------------------- 7. non-finite weights
def _poison(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["ema"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in state["ema"].items()}
    torch.save(state, path)


def test_eval_and_sample_refuse_non_finite_weights_and_never_print_nan(out):
    newest = ckpt_dir(out) / "step-00000020.pt"
    _poison(newest)
    result = invoke("eval", out / "gaussian", "--checkpoint", newest)
    assert result.exit_code == 1 and "not finite" in result.output and "nan" not in result.output.lower()
    result = invoke("eval", out / "gaussian")  # the default: the newest finite one
    assert result.exit_code == 0 and "nan" not in result.output.lower().replace("skipped", "")
    assert f"skipped {newest}: its weights are not finite" in result.output


def test_training_that_makes_weights_non_finite_stops_before_writing_them(out, monkeypatch):
    """The update of step 25 (a checkpoint step) turns the weights into NaN: the loss of that step
    was finite, so only the weight check can catch it before the checkpoint is written."""
    calls = []

    def poisoning(step):
        def poisoned(self, *args, **kwargs):
            result = step(self, *args, **kwargs)
            calls.append(1)
            if len(calls) == 5:
                with torch.no_grad():
                    for group in self.param_groups:
                        for p in group["params"]:
                            p.mul_(float("nan"))
            return result
        return poisoned
    for optimizer in (torch.optim.Adam, torch.optim.AdamW):
        monkeypatch.setattr(optimizer, "step", poisoning(optimizer.step))
    result = run(out, "train.steps=30")
    assert result.exit_code == 1 and "the weights became non-finite" in result.output and "at step 25" in result.output
    assert "the last good checkpoint is" in result.output and "step-00000020.pt" in result.output
    assert checkpoint_files(ckpt_dir(out))[0].name == "step-00000020.pt"


def test_samples_that_are_not_finite_are_refused(out, monkeypatch):
    import mstar_engine.kinds.exponential as runs  # the exponential-family kind's sampler
    sample = runs.sample
    monkeypatch.setattr(runs, "sample", lambda *a, **k: sample(*a, **k) * float("inf"))
    result = invoke("eval", out / "gaussian")
    assert result.exit_code == 1 and "hold NaN or infinite values" in result.output
    assert "inf " not in result.output


# ------------------------------------------------------------- 8, 13. outputs and checkpoints
def test_sample_out_may_not_replace_the_runs_own_files(out):
    before = files_of(out / "gaussian")
    for target in (ckpt_dir(out) / "step-00000020.pt", out / "gaussian" / "spec.resolved.toml",
                   out / "gaussian" / "results.json"):
        result = invoke("sample", out / "gaussian", "-n", 4, "--out", target.with_suffix(".pt")
                        if target.suffix == ".pt" else target)
        assert result.exit_code == 2 and "replace the run's own data" in result.output
    assert files_of(out / "gaussian") == before
    assert invoke("sample", out / "gaussian", "-n", 4, "--out", out / "gaussian" / "samples" / "x.npz").exit_code == 0


def test_sample_out_under_a_file_or_on_a_full_disk_is_a_clear_error(out, monkeypatch):
    result = invoke("sample", out / "gaussian", "-n", 4, "--out", out / "gaussian" / "spec.toml" / "x.npz")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    import mstar_engine.app.runs as runs

    def full(path, write, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(runs, "atomic_write", full)
    result = invoke("sample", out / "gaussian", "-n", 4, "--out", out / "x.npz")
    assert result.exit_code == 1
    assert f"cannot write {out / 'x.npz'}: No space left on device; choose another --out" in result.output


def test_a_checkpoint_of_another_network_or_missing_entries_is_a_clear_error(out, tmp_path):
    state = torch.load(ckpt_dir(out) / "step-00000020.pt", weights_only=True)
    state["ema"] = {k: torch.zeros(3, 3) if v.dim() == 2 else v for k, v in state["ema"].items()}
    torch.save(state, tmp_path / "shapes.pt")
    with pytest.raises(RunError, match="does not fit the run's spec .*size mismatch"):
        load_run(out / "gaussian", tmp_path / "shapes.pt")
    del state["ema"]
    torch.save(state, tmp_path / "missing.pt")
    result = invoke("sample", out / "gaussian", "--checkpoint", tmp_path / "missing.pt")
    assert result.exit_code == 1 and "lacks 'ema'" in result.output


# ------------------------------------------------------------------------ 9. torn temp files
def test_temporary_files_of_a_killed_write_are_cleaned_on_the_next_run(out):
    torn = [ckpt_dir(out) / ".step-00000025.pt.x1y2.tmp", out / "gaussian" / ".results.json.abc.tmp"]
    for path in torn:
        path.write_bytes(b"half")
    result = run(out, "train.steps=25")
    assert result.exit_code == 0 and "removed 2 temporary files" in result.output
    assert not any(p.exists() for p in torn)
    assert find_checkpoint(ckpt_dir(out))[1]["step"] == 25
    assert json.loads((out / "gaussian" / "results.json").read_text())["results"]


def test_a_loss_far_above_the_untrained_networks_stops_the_run(tmp_path):
    """train.lr = 1 without clipping explodes the Gaussian's loss within a few steps (to about
    1e4 times its first value): stopped as diverged instead of finishing with exploded samples."""
    result = run(tmp_path, "train.lr=1.0", "train.clip_grad=1e300", "train.loss_limit=100")
    assert result.exit_code == 1
    assert "exceeded train.loss_limit (100) times the untrained network's" in result.output
    assert "raise train.loss_limit" in result.output
