"""Ctrl-C exits 130 with one ``interrupted:`` line in every command: a second Ctrl-C in training or
distillation (stopped at once, the last checkpoint kept), and a Ctrl-C while sampling in ``mstar
sample``, ``mstar eval`` and at the end of ``mstar run``.

Real SIGINTs through the real handlers, sent to the command's own process group (as a terminal's
Ctrl-C is) at a fixed point, never after a delay: during a given optimiser step
(``MSTAR_TEST_SIGNAL_AT_STEP``, see mstar_engine/util/interrupt.py) or at the first call of the sampler
(ctrl_c_in_sampling.py). Each command runs in a session of its own."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.util.interrupt import TEST_SIGNALS

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "specs" / "quickstart.toml")
IN_SAMPLING = str(Path(__file__).with_name("ctrl_c_in_sampling.py"))
TINY = ["train.steps=24", "train.log_every=8", "train.checkpoint_every=8", "process.steps=16", "compare={}",
        "data.num_examples=1000", "network.mlp.hidden=32", "network.mlp.blocks=1", "sample.num_samples=40",
        "eval.num_samples=40", "sample.batch_size=16", "eval.batch_size=16"]
AT_ONCE = ("interrupted: stopped at once by a second Ctrl-C; the last checkpoint written stays usable: run the same "
           "command again to resume")


def mstar(*args, signals: str | None = None, script: list[str] | None = None) -> subprocess.CompletedProcess:
    """``mstar ARGS`` in a process group of its own; ``signals``: MSTAR_TEST_SIGNAL_AT_STEP."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_SIGNALS, None)
    if signals is not None:
        env[TEST_SIGNALS] = signals
    done = subprocess.run([sys.executable, *(script or ["-m", "mstar_cli.main"]), *map(str, args)],
                          capture_output=True, text=True, env=env, start_new_session=True, timeout=600)
    assert "Traceback" not in done.stderr and "Aborted!" not in done.stderr, done.stderr[-3000:]
    return done


def interrupted(done: subprocess.CompletedProcess) -> str:
    """The one ``interrupted:`` line of a command stopped by Ctrl-C (exit status 130)."""
    assert done.returncode == 130, (done.returncode, done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.startswith("interrupted: ")]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("step-*.pt"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(cli, ["run", QUICKSTART, *TINY, f"experiment.output_dir={out}"])
    assert result.exit_code == 0, result.output
    return out / "quickstart"


def test_a_second_ctrl_c_in_training_stops_at_once_with_130_and_the_run_resumes(trained, tmp_path):
    """Ctrl-C twice in step 12: no checkpoint of step 12 (the last is step 8's), exit 130, and the
    same command resumes from step 8 to the model of the run never stopped."""
    command = ["run", QUICKSTART, *TINY, f"experiment.output_dir={tmp_path}"]
    done = mstar(*command, signals="12:INT,12:INT")
    assert interrupted(done) == AT_ONCE
    assert done.stderr.count("Ctrl-C: stopping after this step") == 1
    folder = tmp_path / "quickstart" / "checkpoints" / "train"
    assert checkpoints(folder) == ["step-00000008.pt"]
    resumed = mstar(*command)
    assert resumed.returncode == 0 and "at step 8" in resumed.stderr, resumed.stderr[-3000:]
    for key in ("model", "ema"):
        ref = torch.load(trained / "checkpoints" / "train" / "step-00000024.pt", weights_only=True)[key]
        got = torch.load(folder / "step-00000024.pt", weights_only=True)[key]
        assert all(torch.equal(ref[name], got[name]) for name in ref), key


def test_ctrl_c_in_distillation_stops_after_the_step_and_a_second_one_at_once(trained, tmp_path):
    import shutil
    run = tmp_path / "quickstart"
    shutil.copytree(trained, run)
    command = ["distill", run, "--to", "8", "distill.steps_per_stage=6"]
    line = interrupted(mstar(*command, signals="3:INT"))
    assert line == (f"interrupted: stopped by Ctrl-C after distill 16→8 step 3 of 6; {run}/checkpoints/distill-8/"
                    "step-00000003.pt holds it: run the same command again to resume")
    assert checkpoints(run / "checkpoints" / "distill-8") == ["step-00000003.pt"]
    assert interrupted(mstar(*command, signals="2:INT,2:INT")) == AT_ONCE  # resumed at 3, stopped in step 5
    assert checkpoints(run / "checkpoints" / "distill-8") == ["step-00000003.pt"]
    resumed = mstar(*command)
    assert resumed.returncode == 0 and "at step 3" in resumed.stderr, resumed.stderr[-3000:]


def test_ctrl_c_while_sampling_after_training_exits_130(trained, tmp_path):
    """mstar run: training done, Ctrl-C in the sampling that follows; running it again samples."""
    command = ["run", QUICKSTART, *TINY, "eval.metrics=[]", f"experiment.output_dir={tmp_path}"]
    line = interrupted(mstar(*command, script=[IN_SAMPLING]))
    assert line == ("interrupted: stopped at once by Ctrl-C; the last checkpoint written stays usable: run the same "
                    "command again to resume")
    assert "step-00000024.pt" in checkpoints(tmp_path / "quickstart" / "checkpoints" / "train")
    assert not (tmp_path / "quickstart" / "samples" / "samples.npz").exists()


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_ctrl_c_in_mstar_sample_and_eval_exits_130(trained, tmp_path, command):
    extra = ["-n", "40", "--out", tmp_path / "x.npz"] if command == "sample" else ["-n", "40", "--steps", "4"]
    line = interrupted(mstar(command, trained, *extra, script=[IN_SAMPLING]))
    assert line == (f"interrupted: stopped by Ctrl-C before mstar {command} finished; run the same command again to "
                    "start it over")
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("value", ["12", "twelve:INT", "12:NOPE", "12:INT,x"])
def test_a_malformed_test_signal_setting_is_refused(monkeypatch, value):
    from mstar_engine.util import interrupt
    monkeypatch.setenv(TEST_SIGNALS, value)
    with pytest.raises(ValueError, match=rf"{TEST_SIGNALS}=.*expected STEP:SIGNAL"):
        with interrupt.graceful_stop():
            pass
