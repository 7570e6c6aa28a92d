"""Reflow (Liu et al. 2023, rectified flow): distil a flow-matching model by training it again on
its own ODE couplings, round after round (``distill.method = "reflow"``).

Round r draws noise ε (one per pair: ``distill.pairs``, default the training set's size), integrates
the teacher's ODE from it (``distill.teacher_steps`` evaluations, the model's solver) to x0, and
trains a student, initialised from the teacher, with the flow-matching loss on the pairs (x0, ε)
instead of independent noise: the couplings it learns are straighter, so few Euler steps follow
them (the published 1-step student after one or two rounds). Each round is one resumable training
stage (``checkpoints/reflow-r``, log lines in ``distill.jsonl``); the pairs are a pure function of
the teacher and the seed, so a resumed round sees the same ones (and a finished round does not
make them again); a round's seconds are kept in its checkpoints, so they count over resumptions.
A class-conditional model pairs each training label with a noise draw.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Callable

import attrs
import torch

from mstar_engine.app.model import fingerprint as spec_fingerprint
from mstar_engine.app.runs import Model, in_batches
from mstar_engine.data.stream import training_source
from mstar_engine.distill.loop import Seconds, weights_digest
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.kinds.flow_paths import ode_sample
from mstar_engine.train.checkpoint import find_checkpoint
from mstar_engine.train.loop import Settings, train

PAIR_BATCH = 1000  # pairs integrated per batch (batch j from its own generator; batches shared out over processes)


def make_pairs(kind, net: torch.nn.Module, n: int, evaluations: int, seed: int, labels: torch.Tensor | None = None,
               group: Group = SINGLE) -> torch.Tensor:
    """(n, 2, ...) pairs (x0, ε): ε ~ N(0, I) and x0 the teacher's ODE solution from it (float64),
    batch j drawn from its own generator, the batches shared out over the processes and gathered."""
    device = next(net.parameters()).device

    def draw(start: int, b: int, g: torch.Generator) -> torch.Tensor:
        eps = torch.randn((b, *kind.family.event_shape), generator=g, device=device, dtype=torch.float64)
        lab = labels[start:start + b].to(device) if labels is not None else None
        x0 = ode_sample(lambda x, t: net(x, t, labels=lab), eps, evaluations, kind.solver)
        return torch.stack([x0, eps], dim=1).cpu()
    with torch.no_grad():
        out = in_batches(n, PAIR_BATCH, seed, device, group, draw)
    return torch.cat(out)


def reflow_model(spec, model: Model, data, run_dir: Path, *, resume: bool = True, log: Callable[[str], None] = print,
                 group: Group = SINGLE) -> tuple[Model, dict[int, Model], dict[int, float]]:
    """Reflow ``model`` for ``distill.rounds`` rounds; the teacher, the last round's student (by its
    ``distill.to`` evaluations) and the seconds of each round summed."""
    d, kind, seed = spec.distill, model.process, spec.experiment.seed
    teacher = model.denoiser.eval()
    n = d.pairs or data.num_train
    conditional = spec.network.class_conditional and data.train_labels is not None
    labels = data.train_labels.repeat(n // data.num_train + 1)[:n] if conditional else None
    cfg = attrs.evolve(Settings.of(spec.train), lr=d.lr, batch_size=d.batch_size, warmup_steps=0, t_per_rollout=1,
                       lr_schedule="constant")
    seconds = 0.0
    for r in range(1, d.rounds + 1):
        folder = run_dir / "checkpoints" / f"reflow-{r}"
        name = f"reflow round {r}"

        def pairs_source(r=r, teacher=teacher, name=name) -> Callable:
            if group.main:
                log(f"{name}: the teacher's ODE from {n:,} noise draws ({d.teacher_steps} evaluations each)")
            pairs = make_pairs(kind, teacher, n, d.teacher_steps, seed * 1_000_003 + r, labels, group)
            return training_source(attrs.evolve(data, train=pairs, train_labels=labels), d.batch_size, seed + r,
                                   labelled=conditional, workers=spec.train.workers)
        made = functools.cache(pairs_source)

        def source(*args, made=made, **kwargs):  # the pairs are integrated when training first asks for a
            return made()(*args, **kwargs)       # batch: a round finished before a resumption never does
        student = copy.deepcopy(teacher).requires_grad_(True).train()
        fp = dict(spec_fingerprint(spec), teacher=weights_digest(teacher), method="reflow", round=str(r),
                  pairs=str(n), teacher_steps=str(d.teacher_steps), steps_per_stage=str(d.steps_per_stage),
                  lr=repr(d.lr), batch_size=str(d.batch_size))
        found = find_checkpoint(folder, warn=log if group.main else None) if resume else None
        clock = Seconds()  # the round's, over its resumptions
        clock.total = float(found[1].get("seconds", 0.0)) if found is not None else 0.0
        clock.begin()

        def extra(step: int, r=r, clock=clock) -> dict:
            return {"evaluations": d.to, "complete": step >= d.steps_per_stage, "method": "reflow", "round": r,
                    "teacher_evaluations": d.teacher_steps, "sampling_rho": kind.rho(), "seconds": clock.tick()}

        teacher = train(attrs.evolve(kind, paired=True), student, source, cfg, d.steps_per_stage, run_dir, seed=seed + r,
                        fingerprint=fp, resume=resume, log=log, group=group, streams=spec.devices.processes,
                        label_dropout=spec.network.label_dropout if conditional else 0.0, found=found,
                        stage_options={"directory": folder, "log_path": run_dir / "distill.jsonl", "name": name,
                                       "prefix": f"{name}: ", "tag": {"stage": f"reflow-{r}"},
                                       "skip_finished": True},
                        extra_state=extra).eval()
        seconds += clock.tick()
    student = Model(kind, teacher, rho=kind.rho(), steps=d.to)
    return model, {d.to: student}, {d.to: seconds}

