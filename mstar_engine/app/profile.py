"""``mstar bench SPEC --profile N``: where the time of a training step goes.

Runs the real training loop under the torch profiler, which records N optimiser steps after one
untimed roll-out block of warm-up (the set-up before the first step and the final checkpoint fall
outside), and summarises its operators by self time: the time spent in an operator itself and not
in the operators it calls, so the rows add up to the profiled time. On CUDA the table is sorted by
device time."""
from __future__ import annotations

import tempfile
from pathlib import Path

import attrs
from torch.profiler import ProfilerActivity, profile, schedule

from mstar_engine.spec.schema import Spec
from mstar_engine.train.inputs import ROLLOUT_BLOCK
from mstar_engine.train.loop import Settings, train


class _Stepper:
    """The loop's per-step hook (:class:`~mstar_engine.train.loop.Periodic`) advancing the profiler."""
    every = 1

    def __init__(self, prof) -> None:
        self.prof = prof

    def __call__(self, step: int, ema) -> None:
        self.prof.step()

    def resumed(self, step: int) -> None:
        pass


def profile_training(spec: Spec, prepared, steps: int, rows: int = 20) -> str:
    """The profiler's table of the ``rows`` costliest operators over ``steps`` training steps."""
    device = next(prepared.denoiser.parameters()).device
    cuda = device.type == "cuda"
    cfg = attrs.evolve(Settings.of(spec.train), checkpoint_every=10**9, log_every=10**9)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # steps 1..W untimed, step W + 1 the profiler's own warm-up, then `steps` recorded ones; the
    # last step (and its checkpoint) after the recording ends
    plan = schedule(wait=ROLLOUT_BLOCK, warmup=1, active=steps, repeat=1)
    with tempfile.TemporaryDirectory() as tmp, profile(activities=activities, schedule=plan) as prof:
        train(prepared.process, prepared.denoiser, prepared.source, cfg, ROLLOUT_BLOCK + steps + 2, Path(tmp),
              seed=spec.experiment.seed, resume=False, log=lambda _: None, label_dropout=prepared.label_dropout,
              periodic=_Stepper(prof))
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=48)
    return f"{steps} training steps of {spec.experiment.name} under the torch profiler (after " \
           f"{ROLLOUT_BLOCK + 1} warm-up steps), by {key.replace('_', ' ')}:\n{table}"
