"""Kill a training run with SIGKILL mid-way, resume it, and compare the final weights with an
uninterrupted run: identical on the CPU (issue #4 acceptance)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from mstar_engine.util.interrupt import TEST_SIGNALS

ROOT = Path(__file__).parents[2]
OVERRIDES = ["train.steps=80", "train.checkpoint_every=20", "train.log_every=20", "process.steps=16",
             "network.mlp.hidden=32", "network.mlp.blocks=1", "sample.num_samples=100", "eval.num_samples=100",
             "data.num_examples=2000"]


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mstar_cli.main", "run", str(ROOT / "specs" / "quickstart.toml"),
            f"experiment.output_dir={out}", *OVERRIDES]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    """SIGKILL during step 50 (MSTAR_TEST_SIGNAL_AT_STEP, see mstar_engine/util/interrupt.py: the run
    kills its own process group at that step, whatever the machine's load): step 40's checkpoint is
    the last, and resuming from it gives the uninterrupted weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(TEST_SIGNALS, None)
    subprocess.run(command(tmp_path / "ref"), check=True, capture_output=True, env=env, cwd=ROOT)

    ckpt = tmp_path / "kill" / "quickstart" / "checkpoints" / "train"
    killed = subprocess.run(command(tmp_path / "kill"), capture_output=True, text=True, cwd=ROOT,
                            env={**env, TEST_SIGNALS: "50:KILL"}, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(p.name for p in ckpt.glob("step-*.pt")) == ["step-00000020.pt", "step-00000040.pt"]
    killed_at = "step-00000040.pt"

    resumed = subprocess.run(command(tmp_path / "kill"), capture_output=True, text=True, env=env, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpt / killed_at} at step 40" in resumed.stderr, resumed.stderr[-3000:]

    ref = torch.load(tmp_path / "ref" / "quickstart" / "checkpoints" / "train" / "step-00000080.pt",
                     weights_only=True)
    got = torch.load(ckpt / "step-00000080.pt", weights_only=True)
    for key in ("model", "ema"):
        for name, tensor in ref[key].items():
            assert torch.equal(tensor, got[key][name]), f"{key}.{name} differs after resume from {killed_at}"
