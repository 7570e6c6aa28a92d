"""The training loop: one optimiser step of any model kind, in the resumable-stage skeleton.

Each optimiser step takes a batch of x0 (a pure function of the example position, so resume is
exact), the kind's draws for it (:meth:`~mstar_engine.kinds.base.Kind.draw`: for the exponential
family K = ``t_per_rollout`` steps t per example and one forward roll-out giving (x_t, s_t) at
them; for flow matching times and noisy points), and the kind's loss of the network on them (for
the learned coupling it includes the kernel KL with x̂0 detached, which trains ρ_t). Learning
rate, EMA decay, data order and every random draw are pure functions of the step (the draws of a
block of steps are made together from a generator seeded by the block), so a
resumed run equals an uninterrupted one bit for bit on the CPU. Resume, checkpoints, logs, Ctrl-C
and divergence are the skeleton's (:mod:`.stage`).

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

import attrs
import torch
from torch import Tensor, nn

from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.networks.denoiser import drop_labels
from mstar_engine.kinds.base import Kind
from mstar_engine.train.checkpoint import find_checkpoint
from mstar_engine.train.inputs import ROLLOUT_BLOCK, BlockInputs
from mstar_engine.train.schedules import ema_decay, learning_rate
from mstar_engine.train.stage import ResumableStage
from mstar_engine.util.clock import duration
from mstar_engine.util.devices import autocast, generator, to_device


class Periodic(Protocol):
    """Something done with the EMA model every ``every`` optimiser steps during training."""
    every: int

    def __call__(self, step: int, ema: nn.Module) -> None: ...

    def resumed(self, step: int) -> None:
        """The run resumed at ``step``: forget what was recorded after it."""


@attrs.frozen
class Settings:
    """What training reads of a spec's ``[train]`` table, as plain values under the same names."""
    batch_size: int
    optimizer: str
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    lr_schedule: str
    warmup_steps: int
    ema: float
    ema_warmup: bool
    clip_grad: float | None
    loss_limit: float
    precision: str
    compile: bool
    channels_last: bool
    activation_checkpointing: bool
    accumulation: int
    t_per_rollout: int
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int

    @classmethod
    def of(cls, table) -> Settings:
        """The settings of a ``[train]`` table (any object with these attributes)."""
        return cls(**{f.name: getattr(table, f.name) for f in attrs.fields(cls)})


def train(kind: Kind, denoiser: nn.Module, batches: Callable[[int], Iterator],
          cfg: Settings, total_steps: int, run_dir: Path, *, seed: int = 0, fingerprint: dict | None = None,
          resume: bool = True, log: Callable[[str], None] = print, label_dropout: float = 0.0,
          group: Group = SINGLE, streams: int = 1, periodic: Periodic | None = None,
          found: tuple[Path, dict] | None = None, stage_options: dict | None = None,
          extra_state: Callable[[int], dict] | None = None) -> nn.Module:
    """Train ``denoiser`` (and a learned coupling) for ``total_steps`` optimiser steps; return the
    EMA model. ``batches(start_example)`` yields batches of x0 — or (x0, labels) pairs for a class-
    conditional denoiser — from that example position on. Labels are replaced by the "no label"
    entry with probability ``label_dropout`` (classifier-free guidance training). ``group``: this
    process's place in a multi-process run; only its rank 0 writes checkpoints and logs.
    ``periodic``: called with the EMA model every ``periodic.every`` steps before the last (an
    evaluation during training), outside the training's random streams, so it changes nothing.
    ``found``: the (path, state) of the checkpoint to resume from when the caller has already
    loaded it (:func:`~mstar_engine.train.checkpoint.find_checkpoint`), so it is not read twice.
    A stage trained by this loop other than training itself (a reflow round) gives its own
    ``stage_options`` (:class:`~.stage.ResumableStage` keywords: ``directory``, ``log_path``, ``tag``,
    ``name``, ``prefix``, ...) and ``extra_state(step)``, more entries for its checkpoints."""
    family = kind.family
    device = next(denoiser.parameters()).device
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    params = [{"params": denoiser.parameters(), "lr": cfg.lr}]
    learned = kind.learned
    if learned is not None:
        learned.to(device)
        params.append({"params": learned.parameters(), "lr": cfg.lr, "coupling": True})
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay,
                        **_fast_update(denoiser))
    run_dir.mkdir(parents=True, exist_ok=True)
    options = {"directory": run_dir / "checkpoints" / "train", "log_path": run_dir / "metrics.jsonl",
               **(stage_options or {})}
    stage = ResumableStage(denoiser, optimizer, total_steps, fingerprint=fingerprint or {}, log_every=cfg.log_every,
                           checkpoint_every=cfg.checkpoint_every, keep=cfg.keep_checkpoints,
                           loss_limit=cfg.loss_limit, clip_grad=cfg.clip_grad, group=group, log=log, **options)
    if group.rank:  # dropout masks differ between processes
        torch.manual_seed(_rank_seed(seed, group.rank, 0))
    if resume and found is None:
        found = find_checkpoint(stage.directory, warn=log if group.main else None)
    b, k = cfg.batch_size, cfg.t_per_rollout
    null_label = int(getattr(getattr(denoiser, "backbone", denoiser), "num_classes", 0))
    block = BlockInputs(kind, batches, b, k, seed, device, group, streams)
    mixed = autocast(cfg.precision, device)
    backbone = getattr(denoiser, "backbone", None)
    if cfg.channels_last and getattr(backbone, "spatial", False):
        backbone.to(memory_format=torch.channels_last)
    if cfg.compile and not getattr(backbone, "compiled", False):
        # compile the forward only, so parameter names (checkpoints) do not change
        backbone.forward = torch.compile(backbone.forward)
        backbone.compiled = True
    if cfg.activation_checkpointing:
        if not hasattr(backbone, "checkpointing"):
            raise ValueError("train.activation_checkpointing needs the U-Net backbone (network.kind = \"unet\")")
        backbone.checkpointing = True
    ema_params, model_params = list(ema.parameters()), list(denoiser.parameters())
    ema_buffers = list(zip(ema.buffers(), denoiser.buffers()))
    inputs, block_state, lr, start, log_step, log_time = [], None, cfg.lr, 0.0, 0, 0.0

    def load(state: dict) -> None:
        nonlocal inputs, block_state
        ema.load_state_dict(state["ema"])
        if learned is not None:
            learned.load_state_dict(state["coupling"])
        ranks = state.get("torch_rng_ranks", [])
        if len(ranks) == group.world:
            torch.set_rng_state(ranks[group.rank])
        elif group.rank == 0:
            torch.set_rng_state(state["torch_rng"])
        else:  # resumed with another number of processes
            torch.manual_seed(_rank_seed(seed, group.rank, stage.step))
        if stage.step % ROLLOUT_BLOCK and stage.step < total_steps:  # resuming inside a block: rebuild it
            # with the ρ it was drawn with (not at the end: no step is left to take)
            block_state = state["block_rho"]
            inputs = block(stage.step // ROLLOUT_BLOCK, block_state)

    def state() -> dict:
        rng = group.gather(torch.get_rng_state())  # collective: every process takes part
        return {"ema": ema.state_dict(), "coupling": learned.state_dict() if learned is not None else {},
                "torch_rng": rng[0], "torch_rng_ranks": rng if group.world > 1 else [],
                "block_rho": block_state, "event_shape": list(family.event_shape),
                "loss_reference": stage.loss_reference, **(extra_state(stage.step) if extra_state else {})}

    def begin() -> None:
        nonlocal start, log_step, log_time
        if periodic is not None:
            periodic.resumed(stage.step)
        start, log_step, log_time = time.perf_counter(), stage.step, time.perf_counter()

    def net(*inputs: Tensor, labels: Tensor | None = None) -> Tensor:
        with mixed:  # the network in bf16/fp16 (train.precision); the loss in the family's dtype
            return denoiser(*inputs, labels=labels) if labels is not None else denoiser(*inputs)

    def losses() -> tuple[Tensor, float | None]:
        nonlocal inputs, block_state, lr
        step = stage.step
        lr = learning_rate(step, cfg.lr, total_steps, cfg.warmup_steps, cfg.lr_schedule)
        for param_group in optimizer.param_groups:
            param_group["lr"] = kind.coupling_lr if param_group.get("coupling") else lr
        if not inputs or step % ROLLOUT_BLOCK == 0:
            block_state = kind.block_state()
            inputs = block(step // ROLLOUT_BLOCK, block_state)
        x0, drawn, labels = inputs[step % ROLLOUT_BLOCK]  # this process's shard; labels of the batch
        step_generator = generator(device, seed * 1_000_003 + 7919 * step + 1 + 104_729 * group.rank)
        if labels is not None:  # drawn for the global batch, then sharded like the examples
            labels = drop_labels(labels.repeat_interleave(k, 0), label_dropout, null_label,
                                 generator=torch.Generator().manual_seed(seed * 1_000_003 + 7919 * step + 2))
            labels = to_device(labels.view(b, k)[group.shard(b)].reshape(-1), device)
        x0_rep = x0.repeat_interleave(k, 0)
        drawn = [d.flatten(0, 1) for d in drawn]
        optimizer.zero_grad(set_to_none=True)
        n = x0_rep.shape[0] * group.world  # (x0, draw) pairs in the global batch
        loss = torch.zeros((), dtype=torch.float64, device=device)
        # gradient accumulation: the step's pairs in train.accumulation micro-batches, each loss
        # weighted by its share, so the gradient is that of the whole batch
        for part in torch.arange(x0_rep.shape[0]).chunk(cfg.accumulation):
            lab = labels[part] if labels is not None else None
            micro, total = kind.training_loss(net, x0_rep[part], tuple(d[part] for d in drawn), lab, step_generator)
            if not torch.isfinite(total):
                return loss, float(total.detach())
            (total * (part.numel() / n)).backward()
            loss = loss + micro.detach() * (part.numel() / n)
        return loss, None

    def stepped() -> None:
        if learned is not None and not all(bool(torch.isfinite(p.grad).all()) for p in learned.parameters()
                                           if p.grad is not None):  # summed over the processes, never clipped
            stage.diverged("the learned coupling's gradient became infinite", "Lower process.coupling.lr or use the "
                           "ddpm coupling")
        decay = ema_decay(stage.step + 1, cfg.ema, cfg.ema_warmup)
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
            for e, p in ema_buffers:
                e.copy_(p)

    def record(loss: float) -> tuple[dict, str]:
        nonlocal log_step, log_time
        clock, step = time.perf_counter(), stage.step
        speed = (step - log_step) * b / max(clock - log_time, 1e-9)
        eta = (total_steps - step) * b / max(speed, 1e-9)
        line = {**stage.tag, "step": step, "loss": loss, "lr": lr, "examples_per_s": round(speed, 1),
                "steps_per_s": round(speed / b, 2), "seconds": round(clock - start, 2)}
        if learned is not None:
            rho = learned().detach()
            line["rho_mean"] = float(rho[1:].mean())
            line.update(family.coupling_metrics(rho))
        log_step, log_time = step, clock
        return line, (f"{stage.prefix}step {step}/{total_steps}  loss {loss:.4f}  lr {lr:.2e}  {speed:,.0f} ex/s  "
                      f"{speed / b:.1f} it/s  ETA {duration(eta)}")

    def after(stopping: bool) -> None:
        nonlocal log_time
        if periodic is not None and stage.step % periodic.every == 0 and stage.step < total_steps and not stopping:
            began = time.perf_counter()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                periodic(stage.step, ema)
            log_time += time.perf_counter() - began  # the status line's speed is training's

    stage.run(found, losses=losses, record=record, load=load, state=state, stepped=stepped, begin=begin,
              after=after)
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
