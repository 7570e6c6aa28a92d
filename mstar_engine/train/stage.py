"""One resumable stage: what training and every distillation stage share.

A stage trains a model for ``total`` optimiser steps. Each stage gives only its step maths (the
loss of a step and what its checkpoints and log lines hold) to :meth:`ResumableStage.run`, which
does the rest the same way for every stage:

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
from torch import Tensor, nn

from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.rundir.records import append_jsonl, keep_records
from mstar_engine.train.checkpoint import differing_keys, nonfinite, point_latest, save_checkpoint
from mstar_engine.util import interrupt
from mstar_engine.util.host_memory import keep_freed_host_memory


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


def check_fingerprint(found: tuple[Path, dict], fingerprint: dict,
                    mismatch: Callable[[Path, list[str]], str] = mismatch_message, point: bool = True) -> None:
    """Refuse the checkpoint ``found`` (path, state) when it was written with other settings
    (:class:`CheckpointMismatch`); else point ``latest`` at it (``point``)."""
    differing = differing_keys(fingerprint, found[1].get("fingerprint", {}))
    if differing:
        raise CheckpointMismatch(mismatch(found[0], differing))
    if point:
        point_latest(found[0])


class ResumableStage:
    """The skeleton of a stage that trains ``model`` with ``optimizer`` for ``total`` steps (the
    gradients summed over the processes and clipped to ``clip_grad``); :meth:`run` resumes or
    starts it with the stage's step maths and takes the steps left. ``name`` and ``prefix`` go
    into its messages ("stopped by Ctrl-C after training step 12 of 24"), ``fix`` is the advice
    when it diverges, ``tag`` is in each of its log lines (which lines of the log are its own),
    ``mismatch`` says why a checkpoint of other settings is refused; ``skip_finished``: a stage
    resumed at its end says nothing and leaves its log as it is."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, total: int, directory: Path,
                 log_path: Path, *, fingerprint: dict, log_every: int, checkpoint_every: int, keep: int = 3,
                 loss_limit: float = 0.0, clip_grad: float | None = None, group: Group = SINGLE,
                 log: Callable[[str], None] = print, name: str = "training", prefix: str = "",
                 fix: str = "Lower train.lr, set train.clip_grad, or check the data", tag: dict | None = None,
                 mismatch: Callable[[Path, list[str]], str] = mismatch_message, skip_finished: bool = False) -> None:
        self.model, self.optimizer, self.total = model, optimizer, total
        self.directory, self.log_path, self.fingerprint = directory, log_path, fingerprint
        self.log_every, self.checkpoint_every, self.keep = log_every, checkpoint_every, keep
        self.loss_limit, self.clip_grad, self.group, self.log = loss_limit, clip_grad, group, log
        self.name, self.prefix, self.fix, self.tag = name, prefix, fix, tag or {}
        self.mismatch, self.skip_finished = mismatch, skip_finished
        self.device = next(model.parameters()).device
        self.step, self.loss_reference = 0, None  # the untrained network's loss: what loss_limit is relative to
        self.resumed_from = self.last_good = None  # checkpoints: the one resumed from, the newest written
        model.train()

    def run(self, found: tuple[Path, dict] | None, *, losses: Callable[[], tuple[Tensor, float | None]],
            record: Callable[[float], tuple[dict, str]], load: Callable[[dict], None] = lambda state: None,
            state: Callable[[], dict] = dict, stepped: Callable[[], None] = lambda: None,
            begin: Callable[[], None] = lambda: None, after: Callable[[bool], None] = lambda stopping: None) -> None:
        """Resume from ``found`` (a checkpoint's path and state), or start afresh when None; then
        take the steps left. The step maths: ``losses()`` is step ``self.step``'s loss (this
        process's share of it, summed over the processes; its gradients computed) and the non-finite
        value met if any (the step is then not taken); ``stepped()`` follows each optimiser step;
        ``record(loss)`` is the log record and the status line after a step. A checkpoint holds the
        model, the optimiser and ``state()`` (built in every process, so it may gather; ``ema`` and
        ``coupling`` must be finite), which ``load(state)`` restores (``self.step`` already set).
        ``begin()`` is called before the first step, ``after(stopping)`` after each step."""
        if found is not None:
            path, saved = found
            check_fingerprint(found, self.fingerprint, self.mismatch, point=self.group.main)
            self.step, self.loss_reference = int(saved["step"]), saved.get("loss_reference")
            self.resumed_from = self.last_good = path
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            load(saved)
        if not (self.skip_finished and self.step >= self.total):
            if found is not None:
                self.log(f"{self.prefix}resumed from {found[0]} at step {self.step}")
            if self.group.main:
                truncate_log(self.log_path, self.step, self.log, **self.tag)
        if self.device.type == "cpu":  # activations live in host memory: keep it between steps
            keep_freed_host_memory()
        begin()
        # listed once: walking the module tree for them took a millisecond a step
        clipped, summed = list(self.model.parameters()), [p for g in self.optimizer.param_groups for p in g["params"]]
        with interrupt.graceful_stop():
            while self.step < self.total:
                loss, bad = losses()
                stopping, value = self._collective(loss, bad)
                self.group.sum_gradients(summed)
                if self.clip_grad is not None:
                    nn.utils.clip_grad_norm_(clipped, self.clip_grad)
                self.optimizer.step()
                stepped()
                self.step += 1
                if self.step % self.log_every == 0 or self.step == self.total:
                    line, text = record(value)
                    if self.group.main:
                        append_jsonl(self.log_path, [line])
                    self.log(text)
                if self.step % self.checkpoint_every == 0 or self.step == self.total or stopping:
                    self.last_good = self._checkpoint(state())
                after(stopping)
                if stopping and self.step < self.total:
                    raise interrupt.Interrupted(f"stopped by Ctrl-C after {self.name} step {self.step} of "
                                                f"{self.total}; {self.last_good} holds it: run the same command "
                                                "again to resume")

    def _collective(self, loss: Tensor, bad: float | None) -> tuple[bool, float]:
        """Whether to stop after this step (Ctrl-C in any process) and the step's loss; one
        collective for the loss, the divergence flag and Ctrl-C, so every process stops together."""
        flags = torch.tensor([float(bad is not None), float(interrupt.requested())], dtype=torch.float64,
                             device=loss.device)
        summed = self.group.sum_(torch.cat([loss.detach().to(torch.float64).reshape(1), flags]))
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
        return bool(summed[2] > 0), value

    def _checkpoint(self, state: dict) -> Path:
        """Write the step's checkpoint (process 0); its path."""
        model = self.model
        state = {"step": self.step, "model": model.state_dict(), "optimizer": self.optimizer.state_dict(), **state,
                 "fingerprint": self.fingerprint,
                 "num_classes": int(getattr(getattr(model, "backbone", model), "num_classes", 0))}
        bad = nonfinite(state)
        if bad:  # never written (the weights are equal in every process): the last good checkpoint stays
            self.diverged(f"the weights became non-finite ({bad})")
        if not self.group.main:  # the file process 0 writes for this step
            return self.directory / f"step-{self.step:08d}.pt"
        return save_checkpoint(self.directory, self.step, state, keep=self.keep, protect=[self.resumed_from])

    def diverged(self, what: str, fix: str | None = None) -> NoReturn:
        """Stop as diverged (:class:`TrainingDiverged`), naming the step and the last good checkpoint."""
        where = f"the last good checkpoint is {self.last_good}" if self.last_good else "no checkpoint was written yet"
        raise TrainingDiverged(f"{self.prefix}{what} at step {self.step}; {where}. {fix or self.fix}")
