"""Resume of every kind in process, through the training loop (the SIGKILL test in
test_kinds_cli.py covers the subprocess path once): a crash after step 12 (last checkpoint at 8)
resumed gives the uninterrupted weights bit for bit, including the energy score's noise draws and
the VAE's latent draws (on 8×8 images)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mstar_engine.app.model import build_denoiser, build_process
from mstar_engine.data.synthetic import make_synthetic
from mstar_engine.spec import load_spec
from mstar_engine.spec.resolve import resolve
from mstar_engine.train.loop import Settings, train

SPEC = Path(__file__).parents[2] / "specs" / "gaussian.toml"
DATA = make_synthetic("gaussian-mixture", 1000, 0)
IMAGES = torch.rand((200, 1, 8, 8), generator=torch.Generator().manual_seed(0)) * 2 - 1  # the VAE's data


class Crash(Exception):
    pass


def run(tmp: Path, kind: str, crash_at: int | None = None):
    data = IMAGES if kind == "vae" else DATA

    def batches(start):
        i = start
        while True:
            yield data[torch.arange(i, i + 32) % data.shape[0]]
            i += 32
    spec = resolve(load_spec(SPEC, [f"process.kind={kind}", "network.mlp.hidden=32", "network.mlp.blocks=1",
                                    "train.batch_size=32", "process.steps=16", "process.energy.draws=3",
                                    "process.vae.channels=8", "process.vae.latent_channels=2",
                                    "train.checkpoint_every=8", "train.log_every=4", "train.t_per_rollout=2"],
                             semantic=False).spec)  # the loop reads none of data.*: the VAE gets images
    torch.manual_seed(0)
    process = build_process(spec.process, tuple(data.shape[1:]))
    denoiser = build_denoiser(spec, process)
    run.initial = {k: v.clone() for k, v in denoiser.state_dict().items()}

    def log(line):
        if crash_at is not None and line.startswith(f"step {crash_at}/"):
            raise Crash

    ema = train(process, denoiser, batches, Settings.of(spec.train), 24, tmp, seed=0, fingerprint={"a": 1}, log=log)
    return denoiser, ema


@pytest.fixture
def threads(request):
    """The VAE's small convolutions run many times faster on one thread on a busy 2-core machine."""
    before = torch.get_num_threads()
    if request.node.callspec.params["kind"] == "vae":
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", ["flow-matching", "energy-score", "vae"])
def test_resume_after_a_crash_is_bit_exact(tmp_path, kind, threads):
    ref_model, ref_ema = run(tmp_path / "ref", kind)
    with pytest.raises(Crash):
        run(tmp_path / "crash", kind, crash_at=12)
    model, ema = run(tmp_path / "crash", kind)
    for a, b in zip([*ref_model.state_dict().values(), *ref_ema.state_dict().values()],
                    [*model.state_dict().values(), *ema.state_dict().values()]):
        assert torch.equal(a, b)
    assert any(not torch.equal(v, run.initial[k]) for k, v in model.state_dict().items())  # it trained
