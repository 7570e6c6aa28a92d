"""The VAE baseline through the CLI: ``mstar validate`` accepts it on images and refuses it, with
the fix, on vector data, with ``[distill]``, with class labels or an image size the encoder cannot
halve twice; ``mstar run`` trains it on the built-in digits, scores the held-out digits by their
negative ELBO (AUPRC of the left-out class), samples, and resumes to the uninterrupted weights;
``mstar sample`` and ``mstar eval`` serve the run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "specs" / "digits.toml"
VAE = ["process.kind=vae", "process.vae.channels=8", "process.vae.latent_channels=2", "process.steps=10"]
TINY = [*VAE, "train.batch_size=32", "train.lr=3e-3", "train.warmup_steps=0", "train.log_every=20",
        "train.checkpoint_every=20", "sample.num_samples=16", "sample.batch_size=16", "eval.batch_size=64",
        "data.classes=[0, 2, 3, 4, 5, 6, 7, 8, 9]", "eval.anomaly_classes=[1]", 'eval.metrics=["auprc"]']


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_validate_accepts_the_vae_on_digits():
    result = invoke("validate", DIGITS, "--set", "process.kind=vae")
    assert result.exit_code == 0, result.output
    result = invoke("plan", DIGITS, "process.kind=vae", "process.vae.latent_channels=3")
    assert result.exit_code == 0, result.output
    assert "VAE baseline (latent 3×2×2, negative ELBO)" in result.output


@pytest.mark.parametrize("spec, overrides, where, says, fix", [
    ("gaussian.toml", [], "process.kind", "needs images (C, H, W), and dataset 'gaussian-mixture' is not an image "
     "dataset", "use an image dataset"),
    ("digits.toml", ["distill.method=progressive", "distill.to=25"], "distill.method",
     'distill.method = "progressive" distils exponential-family models, not process.kind = "vae"',
     "remove [distill]: the VAE samples with one decoder call"),
    ("digits.toml", ["distill.method=consistency", "distill.to=1"], "distill.method",
     'distill.method = "consistency" distils exponential-family models', "remove [distill]"),
    ("digits.toml", ["network.class_conditional=true"], "network.class_conditional",
     "the VAE baseline is unconditional", "remove network.class_conditional"),
    ("digits.toml", ["data.image_size=10"], "data.image_size", "the 10×10 images need a size that is a multiple of 4",
     "set data.image_size = 12"),
    ("digits.toml", ["train.activation_checkpointing=true"], "train.activation_checkpointing",
     "activation checkpointing is the U-Net's", "remove train.activation_checkpointing"),
])
def test_validate_refuses_what_the_vae_cannot_do_with_the_fix(spec, overrides, where, says, fix):
    args = [a for o in ["process.kind=vae", *overrides] for a in ("--set", o)]
    result = invoke("validate", ROOT / "specs" / spec, *args)
    assert result.exit_code == 2, result.output
    assert f"{where}: " in result.output and says in result.output and fix in result.output, result.output
    if "distill" in where:  # the one reason: no method's own settings are checked for a VAE
        assert result.output.count("error:") == 1, result.output


def test_run_scores_samples_serves_and_resumes_to_the_uninterrupted_weights(tmp_path, one_thread):
    """60 steps straight; 30 steps, then the same spec with 60 (resumed from step 30, inside a block
    of draws): the same final weights bit for bit."""
    result = invoke("run", DIGITS, *TINY, "train.steps=60", f"experiment.output_dir={tmp_path / 'ref'}")
    assert result.exit_code == 0, result.output
    run = tmp_path / "ref" / "digits"
    assert (run / "checkpoints" / "train" / "step-00000060.pt").is_file()
    results = json.loads((run / "results.json").read_text())
    assert results["kind"] == "vae" and results["coupling"] == "VAE (negative ELBO)"
    (row,) = results["results"]
    assert row["metric"] == "auprc" and 0.0 <= row["value"] <= 1.0 and row["value"] > row["noise_floor"]
    assert row["steps"] == 1   # its sampler's cost: one decoder call, whatever process.steps says
    samples = np.load(run / "samples" / "samples.npz")["samples"]
    assert samples.shape == (16, 1, 8, 8) and np.isfinite(samples).all()
    assert (run / "samples" / "grid.png").is_file() and (run / "samples" / "trajectories.png").is_file()
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]

    out = tmp_path / "stop"
    assert invoke("run", DIGITS, *TINY, "train.steps=30", f"experiment.output_dir={out}").exit_code == 0
    resumed = invoke("run", DIGITS, *TINY, "train.steps=60", f"experiment.output_dir={out}")
    assert resumed.exit_code == 0, resumed.output
    assert "at step 30" in resumed.output, resumed.output
    ref, got = (torch.load(d / "digits" / "checkpoints" / "train" / "step-00000060.pt", weights_only=True)
                for d in (tmp_path / "ref", out))
    for key in ("model", "ema"):
        for name, tensor in ref[key].items():
            assert torch.equal(tensor, got[key][name]), f"{key}.{name} differs after resume"

    result = invoke("sample", run, "--num-samples", 5, "--steps", 3, "--out", tmp_path / "s.npz")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "s.npz")["samples"].shape == (5, 1, 8, 8)
    assert "(1 network evaluations" in result.output
    result = invoke("sample", run, "--num-samples", 4, "--out", tmp_path / "s.png")   # an image grid
    assert result.exit_code == 0 and (tmp_path / "s.png").is_file(), result.output
    result = invoke("eval", run)
    assert result.exit_code == 0, result.output
    assert f"{row['value']:.4f}" in result.output  # the same seeded score as after training
