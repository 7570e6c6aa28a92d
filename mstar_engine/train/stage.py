"""One resumable stage: what training and every distillation stage share.

A stage takes ``total`` optimiser steps; a subclass of :class:`ResumableStage` gives its step
maths (:meth:`~ResumableStage.losses`, :meth:`~ResumableStage.update`) and what its checkpoints
and log lines hold; the skeleton does the rest the same way for every stage:

- resume from a checkpoint whose fingerprint (the settings it depends on) matches, or start;
- one collective per step for the loss, a non-finite loss and Ctrl-C, so that every process stops
  after the same step; a loss over ``loss_limit`` times the first step's stops as diverged;
- a JSONL log line every ``log_every`` steps, the lines written after the resumed checkpoint (every
  line of the stage, on a fresh start) dropped first;
- atomic checkpoints every ``checkpoint_every`` steps, at the end and on Ctrl-C, never with
  non-finite weights, pruned to the newest ``keep`` but for the one resumed from.

Process 0 (``group.main``) alone writes files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, NoReturn

import torch
from torch import Tensor

from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.rundir.records import append_jsonl, keep_records
from mstar_engine.train.checkpoint import differing_keys, nonfinite, point_latest, save_checkpoint
from mstar_engine.util import interrupt


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


class CheckpointMismatch(RuntimeError):
    """The run directory holds a checkpoint of different settings."""


def mismatch_message(path: Path, differing: list[str]) -> str:
    """Why a checkpoint cannot be resumed with these settings, and what to do instead."""
    shown = ", ".join(differing[:8]) + (f" and {len(differing) - 8} more" if len(differing) > 8 else "")
    return (f"{path} was written by a different spec (differing keys: {shown}); the run directory is left as it "
            "was. To train with these settings, give the run another experiment.name, or run with --overwrite to "
            "move this run aside (it stays loadable there) and start afresh")


def truncate_log(path: Path, step: int, warn: Callable[[str], None] | None = None, **tag) -> None:
    """Drop the log lines of a stage (the records holding ``tag``) written after ``step`` — they
    will be written again — and a torn last line (with a warning through ``warn``); atomically."""
    keep_records(path, lambda r: r.get("step", 0) <= step or any(r.get(k) != v for k, v in tag.items()), warn)


class ResumableStage:
    """The skeleton of a stage; :meth:`run` resumes or starts it and takes its remaining steps.

    A subclass sets the class attributes and gives the step maths: ``load(state)`` restores it from
    a checkpoint (``self.step`` is already its step); ``state()`` is what a checkpoint holds beside
    the step and fingerprint (called in every process, so it may gather; ``model``, ``ema`` and
    ``coupling`` must be finite); ``losses()`` computes step ``self.step``: this process's share of
    its loss (summed over the processes) and the non-finite value met, if any (the step is then not
    taken); ``update()`` applies the step's gradients; ``record(loss)`` is the log record (holding
    :attr:`tag`) and the status line after the step."""

    name = "training"            # in messages: "stopped by Ctrl-C after training step 12 of 24"
    prefix = ""                  # of the stage's messages ("distill 16→8: ")
    fix = "Lower train.lr, set train.clip_grad, or check the data"  # advice when it diverges
    tag: dict = {}               # in every log line of the stage (which the log's lines are its own)
    skip_finished = False        # resumed at its end: no "resumed" line, the log left as it is

    def __init__(self, total: int, directory: Path, log_path: Path, *, fingerprint: dict, log_every: int,
                 checkpoint_every: int, keep: int = 3, loss_limit: float = 0.0, group: Group = SINGLE,
                 log: Callable[[str], None] = print) -> None:
        self.total, self.directory, self.log_path, self.fingerprint = total, directory, log_path, fingerprint
        self.log_every, self.checkpoint_every = log_every, checkpoint_every
        self.keep, self.loss_limit = keep, loss_limit
        self.group, self.log = group, log
        self.step, self.loss_reference = 0, None  # the untrained network's loss: what loss_limit is relative to
        self.resumed_from = self.last_good = None  # checkpoints: the one resumed from, the newest written

    def begin(self) -> None:
        """Called once the stage has resumed or started, before its first step."""

    def after(self, stopping: bool) -> None:
        """Called after each step, its log line and checkpoint (``stopping``: on Ctrl-C)."""

    def mismatch(self, path: Path, differing: list[str]) -> str:
        return mismatch_message(path, differing)

    def run(self, found: tuple[Path, dict] | None) -> None:
        """Resume from ``found`` (a checkpoint's path and state), or start afresh when None; then
        take the steps left."""
        if found is not None:
            path, state = found
            differing = differing_keys(self.fingerprint, state.get("fingerprint", {}))
            if differing:
                raise CheckpointMismatch(self.mismatch(path, differing))
            if self.group.main:
                point_latest(path)
            self.step, self.loss_reference = int(state["step"]), state.get("loss_reference")
            self.resumed_from = self.last_good = path
            self.load(state)
        if not (self.skip_finished and self.step >= self.total):
            if found is not None:
                self.log(f"{self.prefix}resumed from {found[0]} at step {self.step}")
            if self.group.main:
                truncate_log(self.log_path, self.step, self.log, **self.tag)
        self.begin()
        with interrupt.graceful_stop():
            while self.step < self.total:
                self.take_step()

    def take_step(self) -> None:
        loss, bad = self.losses()
        # one collective for the loss, the divergence flag and Ctrl-C, so every process stops together
        flags = torch.tensor([float(bad is not None), float(interrupt.requested())], dtype=torch.float64,
                             device=loss.device)
        summed = self.group.sum_(torch.cat([loss.detach().to(torch.float64).reshape(1), flags]))
        stopping = bool(summed[2] > 0)  # Ctrl-C in any process: every process stops after this step
        if summed[1] > 0:
            self.diverged(f"the loss became {bad}" if bad is not None else
                          "the loss became non-finite in another process")
        value = float(summed[0])
        if self.step == 0:
            self.loss_reference = value
        elif self.loss_limit and self.loss_reference and value > self.loss_limit * self.loss_reference:
            self.diverged(f"the loss {value:.4g} exceeded train.loss_limit ({self.loss_limit:g}) times the untrained "
                          f"network's {self.loss_reference:.4g}", "Lower train.lr, set train.clip_grad, or raise "
                          "train.loss_limit (0 turns this check off)")
        self.update()
        self.step += 1
        if self.step % self.log_every == 0 or self.step == self.total:
            record, line = self.record(value)
            if self.group.main:
                append_jsonl(self.log_path, [record])
            self.log(line)
        if self.step % self.checkpoint_every == 0 or self.step == self.total or stopping:
            self.last_good = self.checkpoint()
        self.after(stopping)
        if stopping and self.step < self.total:
            raise interrupt.Interrupted(f"stopped by Ctrl-C after {self.name} step {self.step} of {self.total}; "
                                        f"{self.last_good} holds it: run the same command again to resume")

    def checkpoint(self) -> Path:
        """Write the step's checkpoint (process 0); its path."""
        state = self.state()
        bad = nonfinite(state)
        if bad:  # never written (the weights are equal in every process): the last good checkpoint stays
            self.diverged(f"the weights became non-finite ({bad})")
        if not self.group.main:  # the file process 0 writes for this step
            return self.directory / f"step-{self.step:08d}.pt"
        return save_checkpoint(self.directory, self.step, {"step": self.step, **state, "fingerprint": self.fingerprint},
                               keep=self.keep, protect=[self.resumed_from])

    def diverged(self, what: str, fix: str | None = None) -> NoReturn:
        where = f"the last good checkpoint is {self.last_good}" if self.last_good else "no checkpoint was written yet"
        raise TrainingDiverged(f"{self.prefix}{what} at step {self.step}; {where}. {fix or self.fix}")
