"""One distillation stage: a student with N/2 evaluations regresses on targets made by its
N-evaluation teacher (MATH.md §3). Published recipe: no EMA, dropout 0, Adam with the learning
rate annealed linearly to 0 over the stage's fixed number of optimiser steps, loss weight
max(SNR, 1) where the family has a Gaussian-equivalent SNR. Resume, checkpoints, logs, Ctrl-C and
divergence are the resumable-stage skeleton's (:mod:`mstar_engine.train.stage`).

Every draw (data position, student steps, roll-out, teacher noise) is a pure function of
(seed, stage, step), so a stage resumed from its checkpoint continues exactly.

Roll-out streams, as in training (:mod:`mstar_engine.train.inputs`): each batch's examples are
split into ``streams`` contiguous parts, each with its own generator for its inputs and targets. A
process of a multi-process run trains the student on its shard of the examples with the gradients
summed. When its process count divides ``streams`` it builds only its own streams' inputs and
targets; otherwise it builds every stream, with the teacher's network evaluations split over the
processes and gathered (:class:`ShardedTeacher`), and keeps its shard. Either way the run equals
the single-process one up to floating-point summation order.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable, Iterator

import attrs
import torch
from torch import Tensor, nn

from mstar_engine.data.stream import Stream
from mstar_engine.distill.targets import distill_targets, predict
from mstar_engine.distributed.group import SINGLE, Group, stream_key
from mstar_engine.process.build import DiffusionProcess
from mstar_engine.process.forward import rollout
from mstar_engine.process.losses import loss_weight
from mstar_engine.rundir.files import set_aside
from mstar_engine.sampling import step_grid
from mstar_engine.train.checkpoint import checkpoint_files, find_checkpoint
from mstar_engine.train.schedules import learning_rate
from mstar_engine.train.stage import ResumableStage
from mstar_engine.util.devices import generator, to_device


@attrs.frozen
class Stage:
    """Stage ``teacher_steps`` → ``student_steps`` of a run, written under ``directory``."""

    teacher_steps: int
    student_steps: int
    directory: Path
    index: int            # 0 for the first stage (decorrelates the stages' random streams)

    @property
    def name(self) -> str:
        return f"distill {self.teacher_steps}→{self.student_steps}"


@attrs.frozen
class Recipe:
    """The settings of every stage, as plain values under the names of a spec's ``[distill]`` table
    (``target`` and ``coupling`` resolved)."""
    steps_per_stage: int
    lr: float
    batch_size: int
    weighting: str
    target: str
    coupling: str

    @classmethod
    def of(cls, table) -> Recipe:
        """The recipe of a ``[distill]`` table (any object with these attributes)."""
        return cls(**{f.name: getattr(table, f.name) for f in attrs.fields(cls)})


def stage_inputs(process: DiffusionProcess, x0: Tensor, student_grid: Tensor, generator: torch.Generator
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """A student step t_a per example, uniform over its grid, and (x_{t_a}, s_{t_a}) from the
    forward process the model was trained on."""
    t = student_grid[torch.randint(0, student_grid.numel(), (x0.shape[0],), generator=generator,
                                   device=generator.device)]
    out = rollout(process.family, x0, t[:, None], rho=process.rho(), generator=generator)
    return out.x[:, 0], out.s[:, 0], t


def distill_stage(process: DiffusionProcess, teacher: nn.Module, student: nn.Module,
                  batches: Callable[[int], Iterator], cfg: Recipe, stage: Stage, rho: Tensor, *, seed: int = 0,
                  fingerprint: dict | None = None, resume: bool = True, log_every: int = 100,
                  checkpoint_every: int = 1000, clip_grad: float | None = None,
                  log: Callable[[str], None] = print, group: Group = SINGLE,
                  streams: int = 1) -> tuple[nn.Module, float]:
    """Train ``student`` (initialised by the caller from the teacher's weights) for
    ``cfg.steps_per_stage`` optimiser steps; return it and the seconds the stage took in total
    (over resumptions). ``rho`` is the sampling coupling of teacher and student (length T + 1);
    ``batches(start_example)`` yields x0 (or (x0, labels)) batches from that position."""
    family, T, total = process.family, process.family.steps, cfg.steps_per_stage
    length = T // stage.teacher_steps
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    fingerprint = dict(fingerprint or {}, teacher=weights_digest(teacher), teacher_steps=str(stage.teacher_steps),
                       student_steps=str(stage.student_steps), steps_per_stage=str(total), lr=repr(cfg.lr),
                       batch_size=str(cfg.batch_size), weighting=cfg.weighting, target=cfg.target,
                       coupling=cfg.coupling)
    resumable = ResumableStage(
        student, optimizer, total, stage.directory, stage.directory.parent.parent / "distill.jsonl",
        fingerprint=fingerprint, log_every=log_every, checkpoint_every=checkpoint_every, clip_grad=clip_grad,
        group=group, log=log, name=stage.name, prefix=f"{stage.name}: ", fix="Lower distill.lr or set train.clip_grad",
        tag={"stage": stage.student_steps}, mismatch=_mismatch, skip_finished=True)  # a finished stage: not repeated
    found = open_stage(stage.directory, stage.name, fingerprint["teacher"], resume, log, group)
    teacher.eval()
    per = cfg.batch_size // streams
    built, everything = group.streams(streams)  # everything: all streams built here, keep the shard after
    stream_teacher = ShardedTeacher(teacher, group) if everything and per % group.world == 0 else teacher
    device, stream = resumable.device, Stream(batches)
    student_grid = torch.tensor(step_grid(T, stage.student_steps)).to(device)
    lr, clock = cfg.lr, Seconds()

    def load(state: dict) -> None:
        clock.total = float(state["seconds"])

    def state() -> dict:
        return {"seconds": clock.tick(), "complete": resumable.step >= total, "evaluations": stage.student_steps,
                "teacher_evaluations": stage.teacher_steps, "sampling_rho": rho.detach().cpu(),
                "event_shape": list(family.event_shape)}

    def losses() -> tuple[Tensor, float | None]:
        nonlocal lr
        step = resumable.step
        lr, x0, labels = linear_step(optimizer, stream, step, cfg, total, device)
        key = (seed * 1_000_003 + stage.index) * 1_000_003 + step
        parts = []
        for j in built:  # stream j: examples [j·per, (j+1)·per), its own generator
            g = generator(device, stream_key(key, j))
            rows = slice(j * per, (j + 1) * per)
            lab = labels[rows] if labels is not None else None
            x_a, s_a, t_a = stage_inputs(process, x0[rows], student_grid, g)
            parts.append((x_a, s_a, t_a, lab,
                          distill_targets(family, stream_teacher, s_a, x_a, t_a, length, rho, cfg.target, g, lab)))
        x_a, s_a, t_a = (torch.cat([p[i] for p in parts]) for i in range(3))
        labels = torch.cat([p[3] for p in parts]) if labels is not None else None
        target = torch.cat([p[4] for p in parts])
        if everything:  # the student learns on this process's shard
            mine = group.shard(cfg.batch_size)
            x_a, s_a, t_a, target = x_a[mine], s_a[mine], t_a[mine], target[mine]
            labels = labels[mine] if labels is not None else None
        pred = predict(student, s_a, x_a, t_a, labels).to(target.dtype)
        weights = loss_weight(family, t_a, cfg.weighting).to(torch.float64)
        # the mean over the global batch: this shard's sum over the global batch size
        loss = (weights * (family.difference(pred, target) ** 2).flatten(1).mean(1)).sum() / cfg.batch_size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss, None if torch.isfinite(loss) else float(loss)

    def record(loss: float) -> tuple[dict, str]:
        step = resumable.step
        return ({"stage": stage.student_steps, "step": step, "loss": loss, "lr": lr, "seconds": round(clock.tick(), 2)},
                f"{stage.name}: step {step}/{total}  loss {loss:.4g}  lr {lr:.2e}")

    resumable.run(found, losses=losses, record=record, load=load, state=state, begin=clock.begin)
    student.eval()
    return student, clock.total


def _mismatch(path: Path, differing: list[str]) -> str:
    return (f"{path} was written with different distillation settings ({', '.join(differing)}); run mstar distill "
            "with --resume never to distil it afresh (the earlier students are moved to checkpoints/replaced/)")


class ShardedTeacher:
    """The teacher evaluated on this process's shard of a global batch, the predictions of every
    process gathered: each process sees the whole batch's predictions for a share of the cost."""

    def __init__(self, teacher: nn.Module, group: Group) -> None:
        self.teacher, self.group = teacher, group

    def __call__(self, s: Tensor, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        mine = self.group.shard(x.shape[0])
        args = (s[mine], x[mine], t[mine]) + ((labels[mine],) if labels is not None else ())
        return self.group.all_gather(self.teacher(*args))


def weights_digest(module: nn.Module) -> str:
    """SHA-1 of a module's parameters and buffers: identifies the teacher a stage was made from."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def set_aside_stage(directory: Path, name: str, why: str, log: Callable[[str], None]) -> None:
    """Move a stage's checkpoints to ``checkpoints/replaced/`` (never deleted: they are models)."""
    if checkpoint_files(directory):
        moved = set_aside(directory, into=directory.parent / "replaced")
        log(f"{name}: {why}: moved the earlier checkpoints to {moved}")


def open_stage(directory: Path, name: str, teacher: str, resume: bool, log: Callable[[str], None],
               group: Group) -> tuple[Path, dict] | None:
    """The checkpoint a distillation stage resumes from, or None: ``--resume never`` and a teacher
    other than the one (digest ``teacher``) the checkpoints were made from set them aside first."""
    if not resume and group.main:  # start afresh: the earlier students are set aside, not deleted
        set_aside_stage(directory, name, "--resume never", log)
    group.barrier()
    found = find_checkpoint(directory, warn=log if group.main else None)
    if found is not None and found[1].get("fingerprint", {}).get("teacher") != teacher:
        log(f"{name}: the teacher changed since {found[0]} was written (trained further?); distilling again")
        group.barrier()  # every process has read the folder before rank 0 moves it
        if group.main:
            set_aside_stage(directory, name, "a new teacher", log)
        found = None
    return found


class Seconds:
    """The seconds a stage took, over its resumptions: ``begin()`` when it (re)starts, ``tick()``
    when they are read, ``total`` restored from a checkpoint."""

    def __init__(self) -> None:
        self.total, self.started = 0.0, 0.0

    def begin(self) -> None:
        self.started = time.perf_counter()

    def tick(self) -> float:
        now = time.perf_counter()
        self.total, self.started = self.total + now - self.started, now
        return self.total


def linear_step(optimizer: torch.optim.Optimizer, stream: Stream, step: int, cfg, total: int,
                device: torch.device) -> tuple[float, Tensor, Tensor | None]:
    """A distillation step's learning rate (peak ``cfg.lr`` annealed linearly to 0, set on the
    optimiser) and its batch of x0 and labels (None when unlabelled) on ``device``."""
    lr = learning_rate(step, cfg.lr, total, decay="linear")
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    drawn = stream.batch_at(step * cfg.batch_size, cfg.batch_size)
    x0, labels = (drawn[0], drawn[1]) if isinstance(drawn, (tuple, list)) else (drawn, None)
    return lr, to_device(x0, device), to_device(labels, device)
