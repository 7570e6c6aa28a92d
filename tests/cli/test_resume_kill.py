"""Kill a training run with SIGKILL mid-way, resume it, and compare the final weights with an
uninterrupted run: identical on the CPU (issue #4 acceptance)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parents[2]
OVERRIDES = ["train.steps=200", "train.checkpoint_every=20", "train.log_every=20", "process.steps=16",
             "network.mlp.hidden=32", "network.mlp.blocks=1", "sample.num_samples=100", "eval.num_samples=100",
             "data.num_examples=2000"]


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mstar_cli.main", "run", str(ROOT / "specs" / "quickstart.toml"),
            f"experiment.output_dir={out}", *OVERRIDES]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command(tmp_path / "ref"), check=True, capture_output=True, env=env, cwd=ROOT)

    ckpt = tmp_path / "kill" / "quickstart" / "checkpoints" / "train"
    proc = subprocess.Popen(command(tmp_path / "kill"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        latest = ckpt / "latest"
        if latest.exists() and latest.read_text().strip() not in ("", "step-00000200.pt"):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = (ckpt / "latest").read_text().strip()
    assert killed_at != "step-00000200.pt"

    resumed = subprocess.run(command(tmp_path / "kill"), capture_output=True, text=True, env=env, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr

    ref = torch.load(tmp_path / "ref" / "quickstart" / "checkpoints" / "train" / "step-00000200.pt",
                     weights_only=True)
    got = torch.load(ckpt / "step-00000200.pt", weights_only=True)
    for key in ("model", "ema"):
        for name, tensor in ref[key].items():
            assert torch.equal(tensor, got[key][name]), f"{key}.{name} differs after resume from {killed_at}"
