"""The training loop: one readable function.

Each optimiser step draws a batch of x0 (a pure function of the example position, so resume is
exact), K = ``t_per_rollout`` steps t per example, one forward roll-out (star-shaped or coupled,
no network calls) giving (x_t, s_t) at those steps, the prediction x̂0 = D_θ(s_t, x_t, t), the
per-step loss, and — for the learned coupling — the kernel KL with x̂0 detached, which trains ρ_t.
Learning rate, EMA decay, data order and every random draw are pure functions of the step (the
roll-outs of a block of steps are simulated together from a generator seeded by the block), so a
resumed run equals an uninterrupted one bit for bit on the CPU.

A process of a multi-process run (``group``) trains on its contiguous shard of every batch, with
the inputs the single-process run would give those examples (:mod:`.inputs`: roll-out streams);
with the gradients summed over the processes the run equals the single-process one up to
floating-point summation order (dropout masks and the learned coupling's Monte Carlo noise are
drawn per process: equal in law, not number for number).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from torch import nn

from mstar_engine.util import interrupt
from mstar_engine.util.clock import duration
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.util.devices import autocast, generator, to_device
from mstar_engine.process.build import DiffusionProcess
from mstar_engine.process.kernel_kl import kernel_kl
from mstar_engine.networks.denoiser import drop_labels
from mstar_engine.process.losses import step_loss
from mstar_engine.spec.schema import Train
from mstar_engine.rundir.records import append_jsonl, keep_records
from mstar_engine.train.checkpoint import differing_keys, find_checkpoint, nonfinite, save_checkpoint
from mstar_engine.train.inputs import ROLLOUT_BLOCK, BlockInputs
from mstar_engine.train.schedules import ema_decay, learning_rate


class Periodic(Protocol):
    """Something done with the EMA model every ``every`` optimiser steps during training."""
    every: int

    def __call__(self, step: int, ema: nn.Module) -> None: ...

    def resumed(self, step: int) -> None:
        """The run resumed at ``step``: forget what was recorded after it."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class CheckpointMismatch(RuntimeError):
    """The run directory holds a checkpoint of a different spec."""


def mismatch_message(path: Path, differing: list[str]) -> str:
    """Why a checkpoint cannot be resumed with these settings, and what to do instead."""
    shown = ", ".join(differing[:8]) + (f" and {len(differing) - 8} more" if len(differing) > 8 else "")
    return (f"{path} was written by a different spec (differing keys: {shown}); the run directory is left as it "
            "was. To train with these settings, give the run another experiment.name, or run with --overwrite to "
            "move this run aside (it stays loadable there) and start afresh")


def train(process: DiffusionProcess, denoiser: nn.Module, batches: Callable[[int], Iterator],
          cfg: Train, total_steps: int, run_dir: Path, *, seed: int = 0, fingerprint: dict | None = None,
          resume: bool = True, log: Callable[[str], None] = print, label_dropout: float = 0.0,
          group: Group = SINGLE, streams: int = 1, periodic: Periodic | None = None,
          found: tuple[Path, dict] | None = None) -> nn.Module:
    """Train ``denoiser`` (and a learned coupling) for ``total_steps`` optimiser steps; return the
    EMA model. ``batches(start_example)`` yields batches of x0 — or (x0, labels) pairs for a class-
    conditional denoiser — from that example position on. Labels are replaced by the "no label"
    entry with probability ``label_dropout`` (classifier-free guidance training). ``group``: this
    process's place in a multi-process run; only its rank 0 writes checkpoints and logs.
    ``periodic``: called with the EMA model every ``periodic.every`` steps before the last (an
    evaluation during training), outside the training's random streams, so it changes nothing.
    ``found``: the (path, state) of the checkpoint to resume from when the caller has already
    loaded it (:func:`~mstar_engine.train.checkpoint.find_checkpoint`), so it is not read twice."""
    family = process.family
    device = next(denoiser.parameters()).device
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    params = [{"params": denoiser.parameters(), "lr": cfg.lr}]
    learned = process.learned
    if learned is not None:
        learned.to(device)
        params.append({"params": learned.parameters(), "lr": cfg.lr, "coupling": True})
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                        **_fast_update(denoiser))
    coupling_lr = process.coupling_lr
    ckpt_dir = run_dir / "checkpoints" / "train"
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    fingerprint = fingerprint or {}

    step, loss_reference = 0, None
    if group.rank:  # dropout masks differ between processes
        torch.manual_seed(_rank_seed(seed, group.rank, 0))
    if resume and found is None:
        found = find_checkpoint(ckpt_dir, warn=log if group.main else None)
    latest = found[0] if found is not None else None
    if found is not None:
        state = found[1]
        differing = differing_keys(fingerprint, state.get("fingerprint", {}))
        if differing:
            raise CheckpointMismatch(mismatch_message(latest, differing))
        denoiser.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if learned is not None:
            learned.load_state_dict(state["coupling"])
        step = int(state["step"])
        loss_reference = state.get("loss_reference")
        ranks = state.get("torch_rng_ranks", [])
        if len(ranks) == group.world:
            torch.set_rng_state(ranks[group.rank])
        elif group.rank == 0:
            torch.set_rng_state(state["torch_rng"])
        else:  # resumed with another number of processes
            torch.manual_seed(_rank_seed(seed, group.rank, step))
        log(f"resumed from {latest} at step {step}")
    if group.main:  # the lines written after the checkpoint (all of them when starting afresh) go
        truncate_log(metrics_path, step, log)
    if periodic is not None:
        periodic.resumed(step)

    def checkpoint() -> Path | None:
        rng = group.gather(torch.get_rng_state())  # collective: every process takes part
        bad = nonfinite({"model": denoiser.state_dict(), "ema": ema.state_dict(),
                         "coupling": learned.state_dict() if learned is not None else {}})
        if bad:  # never written (the weights are equal in every process): the last good checkpoint stays
            diverged(f"the weights became non-finite ({bad})", "Lower train.lr, set train.clip_grad, or check the data")
        if not group.main:  # the file process 0 writes for this step
            return ckpt_dir / f"step-{step:08d}.pt"
        return save_checkpoint(ckpt_dir, step, {
            "step": step, "model": denoiser.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(), "coupling": learned.state_dict() if learned is not None else {},
            "torch_rng": rng[0], "torch_rng_ranks": rng if group.world > 1 else [], "block_rho": block_rho,
            "fingerprint": fingerprint, "event_shape": list(family.event_shape), "num_classes": null_label,
            "loss_reference": loss_reference},
            keep=cfg.keep_checkpoints, protect=[latest])

    k = cfg.t_per_rollout
    null_label = int(getattr(getattr(denoiser, "backbone", denoiser), "num_classes", 0))

    b = cfg.batch_size
    block = BlockInputs(family, batches, b, k, seed, device, group, streams)

    inputs: list = []
    if step % ROLLOUT_BLOCK:  # resuming inside a block: rebuild it with the ρ it was drawn with
        block_rho = state["block_rho"]
        inputs = block(step // ROLLOUT_BLOCK, block_rho)
    mixed = autocast(cfg.precision, next(denoiser.parameters()).device)
    if cfg.channels_last and getattr(denoiser.backbone, "spatial", False):
        denoiser.backbone.to(memory_format=torch.channels_last)
    if cfg.compile and not getattr(denoiser.backbone, "compiled", False):
        # compile the forward only, so parameter names (checkpoints) do not change
        denoiser.backbone.forward = torch.compile(denoiser.backbone.forward)
        denoiser.backbone.compiled = True
    if cfg.activation_checkpointing:
        if not hasattr(denoiser.backbone, "checkpointing"):
            raise ValueError("train.activation_checkpointing needs the U-Net backbone (network.kind = \"unet\")")
        denoiser.backbone.checkpointing = True
    ema_params, model_params = list(ema.parameters()), list(denoiser.parameters())
    ema_buffers = list(zip(ema.buffers(), denoiser.buffers()))
    denoiser.train()
    start, last_log_step, last_log_time = time.perf_counter(), step, time.perf_counter()
    last_good = latest

    def diverged(what: str, fix: str) -> None:
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        raise TrainingDiverged(f"{what} at step {step}; {where}. {fix}")
    with interrupt.graceful_stop():
        while step < total_steps:
            lr = learning_rate(step, cfg.lr, total_steps, cfg.warmup_steps, cfg.lr_schedule)
            for param_group in optimizer.param_groups:
                param_group["lr"] = coupling_lr if param_group.get("coupling") else lr
            if not inputs or step % ROLLOUT_BLOCK == 0:
                block_rho = process.rho()
                inputs = block(step // ROLLOUT_BLOCK, block_rho)
            x0, keep, x_k, s_k, labels = inputs[step % ROLLOUT_BLOCK]  # this process's shard; labels of the batch
            step_generator = generator(device, seed * 1_000_003 + 7919 * step + 1 + 104_729 * group.rank)
            if labels is not None:  # drawn for the global batch, then sharded like the examples
                labels = drop_labels(labels.repeat_interleave(k, 0), label_dropout, null_label,
                                     generator=torch.Generator().manual_seed(seed * 1_000_003 + 7919 * step + 2))
                labels = to_device(labels.view(b, k)[group.shard(b)].reshape(-1), device)
            x0_rep = x0.repeat_interleave(k, 0)
            t = keep.reshape(-1)
            x_t, s_t = x_k.flatten(0, 1), s_k.flatten(0, 1)
            optimizer.zero_grad(set_to_none=True)
            n = x_t.shape[0] * group.world  # (x0, t) pairs in the global batch
            loss = torch.zeros((), dtype=torch.float64, device=device)
            bad = None
            # gradient accumulation: the step's (x0, t) pairs in train.accumulation micro-batches, each
            # loss weighted by its share, so the gradient is that of the whole batch
            for part in torch.arange(x_t.shape[0]).chunk(cfg.accumulation):
                lab = labels[part] if labels is not None else None
                with mixed:  # the network in bf16/fp16 (train.precision); the loss in the family's dtype
                    x0_hat = denoiser(s_t[part], x_t[part], t[part], lab) if lab is not None else \
                        denoiser(s_t[part], x_t[part], t[part])
                micro = step_loss(family, x0_rep[part], x0_hat, t[part], process.loss, process.loss_weighting).mean()
                total = micro
                if learned is not None:
                    rho = learned()[t[part]]
                    total = total + kernel_kl(family, x_t[part], x0_rep[part], x0_hat.detach(), t[part], rho,
                                              generator=step_generator).mean()
                if not torch.isfinite(total):
                    bad = float(total.detach())
                    break
                (total * (part.numel() / n)).backward()
                loss = loss + micro.detach() * (part.numel() / n)
            # one collective for the loss, the divergence flag and Ctrl-C, so every process stops together
            flags = torch.tensor([float(bad is not None), float(interrupt.requested())], dtype=torch.float64,
                                 device=device)
            summed = group.sum_(torch.cat([loss.reshape(1), flags]))
            stopping = bool(summed[2] > 0)  # Ctrl-C in any process: every process stops after this step
            if summed[1] > 0:
                became = f"became {bad}" if bad is not None else "became non-finite in another process"
                diverged(f"the loss {became}", "Lower train.lr, set train.clip_grad, or check the data")
            loss = summed[0]
            value = float(loss)
            if step == 0:  # the untrained network's loss: what train.loss_limit is relative to
                loss_reference = value
            elif cfg.loss_limit and loss_reference and value > cfg.loss_limit * loss_reference:
                diverged(f"the loss {value:.4g} exceeded train.loss_limit ({cfg.loss_limit:g}) times the untrained "
                         f"network's {loss_reference:.4g}", "Lower train.lr, set train.clip_grad, or raise "
                         "train.loss_limit (0 turns this check off)")
            group.sum_gradients([p for g in optimizer.param_groups for p in g["params"]])
            if cfg.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(denoiser.parameters(), cfg.clip_grad)
            if learned is not None and not all(bool(torch.isfinite(p.grad).all()) for p in learned.parameters()
                                               if p.grad is not None):
                diverged("the learned coupling's gradient became infinite", "Lower process.coupling.lr or use the ddpm "
                         "coupling")
            optimizer.step()
            step += 1
            decay = ema_decay(step, cfg.ema, cfg.ema_warmup)
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
                for e, p in ema_buffers:
                    e.copy_(p)

            if step % cfg.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                speed = (step - last_log_step) * b / max(now - last_log_time, 1e-9)
                eta = (total_steps - step) * b / max(speed, 1e-9)
                steps_per_s = speed / b
                record = {"step": step, "loss": float(loss), "lr": lr, "examples_per_s": round(speed, 1),
                          "steps_per_s": round(steps_per_s, 2), "seconds": round(now - start, 2)}
                if learned is not None:
                    record["rho_mean"] = float(learned().detach()[1:].mean())
                if group.main:
                    append_jsonl(metrics_path, [record])
                log(f"step {step}/{total_steps}  loss {record['loss']:.4f}  lr {lr:.2e}  {speed:,.0f} ex/s  "
                    f"{steps_per_s:.1f} it/s  ETA {duration(eta)}")
                last_log_step, last_log_time = step, now
            if step % cfg.checkpoint_every == 0 or step == total_steps or stopping:
                last_good = checkpoint()
            if periodic is not None and step % periodic.every == 0 and step < total_steps and not stopping:
                began = time.perf_counter()
                with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                    periodic(step, ema)
                last_log_time += time.perf_counter() - began  # the status line's speed is training's
            if stopping and step < total_steps:
                raise interrupt.Interrupted(f"stopped by Ctrl-C after training step {step} of {total_steps}; "
                                            f"{last_good} holds it: run the same command again to resume")
    return ema


def _rank_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of process ``rank`` (> 0) when it starts or resumes at ``step``."""
    return (int(seed) * 1_000_003 + 15_485_863 * rank + step) % 2**63


def _fast_update(module: nn.Module) -> dict:
    """The fused Adam(W) kernel where torch has it for these parameters (float32 on CPU or CUDA,
    torch ≥ 2.4), else the multi-tensor one: same update, several times fewer kernel calls than
    the per-parameter loop on small networks."""
    params = list(module.parameters())
    devices = {p.device.type for p in params}
    fused_ok = all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params) and \
        devices <= {"cpu", "cuda"} and tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    return {"fused": True} if fused_ok else {"foreach": True}


def truncate_log(path: Path, step: int, warn: Callable[[str], None] | None = None) -> None:
    """Drop log lines written after the checkpoint being resumed (they will be written again), and
    a torn last line (with a warning through ``warn``); the log is rewritten atomically."""
    keep_records(path, lambda record: record.get("step", 0) <= step, warn)
