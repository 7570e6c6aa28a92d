"""Training loop: exact resume after a crash or Ctrl-C, atomic checkpoints, divergence, spec mismatch."""
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from mstar_engine.util import interrupt
from mstar_engine.data.synthetic import make_synthetic
from mstar_engine.networks import build_mlp_denoiser
from mstar_engine.app.model import build_process
from mstar_engine.process.normalise import TailNorm
from mstar_engine.spec import load_spec
from mstar_engine.spec.resolve import resolve
from mstar_engine.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from mstar_engine.train.loop import Settings, train
from mstar_engine.train.stage import CheckpointMismatch, TrainingDiverged

SPEC = Path(__file__).parents[2] / "specs" / "quickstart.toml"
DATA = make_synthetic("dirichlet-mixture", 1000, 0)


class Crash(Exception):
    pass


def setup(coupling="ddpm", **train_overrides):
    family = ["process.family=gaussian"] if coupling == "learned" else []   # a learnable kernel KL
    overrides = family + [f"process.coupling.kind={coupling}", "network.mlp.hidden=32", "network.mlp.blocks=1",
                 "train.batch_size=32", "process.steps=16", "network.mlp.time_dim=8"]
    overrides += [f"train.{k}={v}" for k, v in train_overrides.items()]
    spec = resolve(load_spec(SPEC, overrides).spec)
    torch.manual_seed(0)
    process = build_process(spec.process, (3,))
    norm = TailNorm.estimate(process.family, [DATA[:128]], process.rho(), torch.Generator().manual_seed(0))
    denoiser = build_mlp_denoiser(process.family, norm, process.inputs, spec.network.mlp)
    return Settings.of(spec.train), process, denoiser


def batches(start):
    i = start
    while True:
        yield DATA[torch.arange(i, i + 32) % DATA.shape[0]]
        i += 32


def run(tmp, total=24, crash_at=None, coupling="ddpm", **kw):
    cfg, process, denoiser = setup(coupling, checkpoint_every=8, log_every=4, **kw)

    def log(line):
        if crash_at is not None and line.startswith(f"step {crash_at}/"):
            raise Crash

    ema = train(process, denoiser, batches, cfg, total, tmp, seed=0, fingerprint={"a": 1}, log=log)
    return denoiser, ema, process


@pytest.mark.parametrize("coupling", ["ddpm", "learned"])
def test_resume_after_crash_is_bit_exact(tmp_path, coupling):
    """Crash after step 12 (last checkpoint at 8), resume, and compare with an uninterrupted run."""
    ref_model, ref_ema, ref_proc = run(tmp_path / "ref", coupling=coupling)
    with pytest.raises(Crash):
        run(tmp_path / "crash", crash_at=12, coupling=coupling)
    assert latest_checkpoint(tmp_path / "crash" / "checkpoints" / "train").name == "step-00000008.pt"
    model, ema, proc = run(tmp_path / "crash", coupling=coupling)
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(ref_ema.state_dict().values(), ema.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(ref_proc.rho(), proc.rho())
    if coupling == "learned":
        assert ref_proc.coupling_kind == "learned" and not torch.equal(ref_proc.rho(), setup(coupling)[1].rho())
    ref_log = (tmp_path / "ref" / "metrics.jsonl").read_text()
    assert (tmp_path / "crash" / "metrics.jsonl").read_text().count("\n") == ref_log.count("\n")


def test_checkpoint_loads_weights_only_and_interrupted_write_keeps_previous(tmp_path, monkeypatch):
    run(tmp_path, total=8)
    ckpt_dir = tmp_path / "checkpoints" / "train"
    good = latest_checkpoint(ckpt_dir)
    state = torch.load(good, weights_only=True)
    assert state["step"] == 8
    # interrupt the next write in the middle of torch.save: the previous checkpoint must still load
    real_save = torch.save

    def broken_save(obj, fh, *a, **k):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="No space left on device.*step-00000008.pt is intact"):
        run(tmp_path, total=16)
    monkeypatch.setattr(torch, "save", real_save)
    assert latest_checkpoint(ckpt_dir) == good
    assert load_checkpoint(good)["step"] == 8
    assert not list(ckpt_dir.glob("*.tmp"))


def test_diverging_loss_stops_with_a_clear_message(tmp_path):
    """A non-finite loss at step 10 (after the checkpoint at 8) stops training, names the last
    good checkpoint, and leaves it loadable."""
    cfg, process, denoiser = setup(checkpoint_every=8, log_every=4)

    def poisoned(start):
        for i, batch in enumerate(batches(start)):
            yield batch * float("nan") if start + i * 32 >= 10 * 32 else batch

    with pytest.raises(TrainingDiverged, match=r"at step 10; the last good checkpoint is .*step-00000008.pt"):
        train(process, denoiser, poisoned, cfg, 24, tmp_path, log=lambda _: None)
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints" / "train"))["step"] == 8


def test_checkpoint_of_another_spec_is_refused(tmp_path):
    cfg, process, denoiser = setup(checkpoint_every=4, log_every=4)
    train(process, denoiser, batches, cfg, 4, tmp_path, fingerprint={"process.steps": 16, "x": 1},
          log=lambda _: None)
    cfg, process, denoiser = setup(checkpoint_every=4, log_every=4)
    with pytest.raises(CheckpointMismatch, match="differing keys: process.steps"):
        train(process, denoiser, batches, cfg, 8, tmp_path, fingerprint={"process.steps": 32, "x": 1},
              log=lambda _: None)


@pytest.mark.parametrize("coupling", ["ddpm", "learned"])
def test_gradient_accumulation_equals_the_whole_batch(tmp_path, coupling, monkeypatch):
    """train.accumulation = 4 micro-batches give the whole batch's gradients (to float rounding),
    recorded at every optimiser step, and so the same weights."""
    real_step = torch.optim.AdamW.step
    grads: list[list[torch.Tensor]] = []

    def recording_step(self, *a, **k):
        grads.append([p.grad.clone() for g in self.param_groups for p in g["params"] if p.grad is not None])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    whole, _, _ = run(tmp_path / "a", total=5, coupling=coupling, clip_grad=1e9)
    whole_grads, grads[:] = list(grads), []
    split, _, _ = run(tmp_path / "b", total=5, coupling=coupling, clip_grad=1e9, accumulation=4)
    assert len(whole_grads) == len(grads) == 5
    for gw, gs in zip(whole_grads, grads):
        for a, b in zip(gw, gs):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    for (name, a), b in zip(whole.named_parameters(), split.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name


# ------------------------------------------------------------------------------ Ctrl-C
def default_sigint() -> bool:
    return signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_first_ctrl_c_raises_a_flag_and_the_second_stops_at_once(monkeypatch):
    assert default_sigint(), "these tests send SIGINT to this process and need Python's default handler"
    monkeypatch.delenv(interrupt.SWITCH, raising=False)  # in-process CLI tests switch it on for the process
    with interrupt.graceful_stop():  # not switched on (a library caller): the handler stays Python's
        assert default_sigint()
    monkeypatch.setenv(interrupt.SWITCH, "1")
    with interrupt.graceful_stop():
        assert not default_sigint() and not interrupt.requested()
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert default_sigint() and not interrupt.requested()


def _interrupt_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # a KeyboardInterrupt would end this process with exit code 1


def test_forked_children_leave_ctrl_c_to_their_parent(monkeypatch, capfd):
    """A DataLoader worker forked inside the block ignores Ctrl-C (it keeps serving batches until
    its parent stops): no message of its own, no flag in the parent."""
    import multiprocessing
    assert default_sigint()
    monkeypatch.setenv(interrupt.SWITCH, "1")
    with interrupt.graceful_stop():
        child = multiprocessing.get_context("fork").Process(target=_interrupt_self)
        child.start()
        child.join(10)
        assert child.exitcode == 0 and not interrupt.requested()
    assert "Ctrl-C" not in capfd.readouterr().err


def test_ctrl_c_finishes_the_step_checkpoints_it_and_resumes_exactly(tmp_path, monkeypatch):
    """SIGINT during step 13 (sent at the step-12 log line): step 13 completes, is checkpointed
    (between the regular checkpoints at 8 and 16), and resuming gives the uninterrupted run."""
    assert default_sigint()
    ref_model, ref_ema, _ = run(tmp_path / "ref")
    monkeypatch.setenv(interrupt.SWITCH, "1")
    cfg, process, denoiser = setup("ddpm", checkpoint_every=8, log_every=4)

    def log(line):
        if line.startswith("step 12/"):
            os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(interrupt.Interrupted, match=r"after training step 13 of 24; .*step-00000013.pt holds it"):
        train(process, denoiser, batches, cfg, 24, tmp_path / "stopped", seed=0, fingerprint={"a": 1}, log=log)
    assert default_sigint()
    assert latest_checkpoint(tmp_path / "stopped" / "checkpoints" / "train").name == "step-00000013.pt"
    model, ema, _ = run(tmp_path / "stopped")
    for ref, got in ((ref_model, model), (ref_ema, ema)):
        for a, b in zip(ref.state_dict().values(), got.state_dict().values()):
            assert torch.equal(a, b)
    assert (tmp_path / "stopped" / "metrics.jsonl").read_text().count("\n") == \
        (tmp_path / "ref" / "metrics.jsonl").read_text().count("\n")


@pytest.mark.parametrize("keep, kept", [(None, [24, 32, 40]), (1, [40]), (0, [8, 16, 24, 32, 40])])
def test_keep_checkpoints(tmp_path, keep, kept):
    run(tmp_path, total=40, **({} if keep is None else {"keep_checkpoints": keep}))
    files = sorted((tmp_path / "checkpoints" / "train").glob("step-*.pt"))
    assert [int(f.stem.split("-")[1]) for f in files] == kept
    assert latest_checkpoint(tmp_path / "checkpoints" / "train").name == "step-00000040.pt"
