"""Fixtures of the Inception tests: stand-in weights in pytorch-fid's file format and a tiny
digits run whose resolved spec names them."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.metrics.inception import fid_inception_network

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_IMAGES = 16


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = fid_inception_network()
    for m in net.modules():  # non-trivial normalisation statistics, so that every layer matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def digits_run(weights, tmp_path_factory) -> Path:
    """A tiny digits run whose resolved spec names the stand-in Inception weights and compares
    with a subset of the training images."""
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("digits")
    tiny = ["process.steps=4", "network.unet.channels=8", "network.unet.channel_mult=[1, 2]",
            "network.unet.res_blocks=1", "network.unet.attention_resolutions=[4]", "network.unet.head_channels=8",
            "train.batch_size=8", "train.steps=2", "sample.num_samples=4", "sample.batch_size=4",
            "eval.metrics=[]", f"experiment.output_dir={out}"]
    result = CliRunner().invoke(cli, ["run", str(ROOT / "specs" / "digits.toml"), *tiny])
    assert result.exit_code == 0, result.output
    run = out / "digits"
    text = (run / "spec.resolved.toml").read_text()
    # the image metrics compare with 16 training images, not all 1617: Inception is slow on the CPU
    (run / "spec.resolved.toml").write_text(text.replace(
        "[eval]\n", f'[eval]\ninception_weights = "{weights}"\nreference_images = {REFERENCE_IMAGES}\n', 1))
    return run
