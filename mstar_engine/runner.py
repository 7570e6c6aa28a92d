"""Execute a compiled plan: write the run directory, then train → sample → evaluate.

Run directory (ARCHITECTURE.md): ``spec.toml`` as given, ``spec.resolved.toml``, ``plan.txt``,
``checkpoints/`` (atomic, ``latest`` pointer), ``metrics.jsonl``, ``samples/``, ``results.json``
and ``results.txt`` (the printed table). Every stage is resumable: training continues from the
latest checkpoint; sampling and evaluation are recomputed from the final weights.
"""
from __future__ import annotations

import json
import math
from typing import Callable

import attrs
import tomli_w
import torch

from mstar_engine.data.load import batches, check_for_family, load_dataset
from mstar_engine.evaluate import check_evaluable, evaluate, results_table
from mstar_engine.plan import Plan, render_plan
from mstar_engine.plan.compile import flatten
from mstar_engine.process.build import build_process
from mstar_engine.process.normalise import TailNorm
from mstar_engine.runs import Model, build_denoiser, save_samples
from mstar_engine.spec import LoadedSpec
from mstar_engine.spec.schema import Spec
from mstar_engine.train.loop import train

#: Keys that may change between a run and its resumption without invalidating the checkpoint.
RESUMABLE_CHANGES = ("experiment.description", "compare", "train.steps", "train.epochs", "train.checkpoint_every",
                     "train.log_every", "train.workers", "sample.", "eval.", "distill.", "devices.")
NORM_EXAMPLES = 4096  # training examples used to estimate the tail normalisation


def fingerprint(spec: Spec) -> dict[str, str]:
    """The settings a checkpoint depends on, as strings (compared on resume)."""
    return {".".join(p): repr(v) for p, v in flatten(spec)
            if not any(".".join(p).startswith(k) for k in RESUMABLE_CHANGES)}


def write_run_files(plan: Plan, loaded: LoadedSpec) -> None:
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.toml").write_text(loaded.text)
    resolved = attrs.asdict(plan.spec, filter=lambda _, v: v is not None)
    (run_dir / "spec.resolved.toml").write_text(tomli_w.dumps(resolved))
    (run_dir / "plan.txt").write_text(render_plan(plan))


def execute(plan: Plan, loaded: LoadedSpec, *, resume: bool = True, log: Callable[[str], None] = print) -> dict:
    spec = plan.spec
    seed = spec.experiment.seed
    write_run_files(plan, loaded)
    data = load_dataset(spec.data, seed)
    check_evaluable(spec, data.held_out.shape[0])
    if spec.network.kind != "mlp":
        raise NotImplementedError("the U-Net and image datasets arrive with issue #5; use network.kind = \"mlp\"")
    torch.manual_seed(seed)
    process = build_process(spec.process, data.event_shape)
    for note in process.notes:
        log(f"note: {note}")
    check_for_family(data, process.family)
    norm = TailNorm.estimate(process.family, [data.train[:NORM_EXAMPLES]], process.rho(),
                             torch.Generator().manual_seed(seed + 2))
    denoiser = build_denoiser(spec, process, norm)
    total = plan.stages[0].optimizer_steps
    if total is None:
        total = math.ceil(spec.train.epochs * data.train.shape[0] / spec.train.batch_size)
    ema = train(process, denoiser, lambda start: batches(data.train, spec.train.batch_size, seed, start),
                spec.train, total, plan.run_dir, seed=seed, fingerprint=fingerprint(spec), resume=resume, log=log)
    model = Model(process, ema.eval())
    samples = model.sample(spec.sample.num_samples, spec.sample.steps, seed=seed + 3,
                           batch_size=spec.sample.batch_size, final=spec.sample.final)
    save_samples(plan.run_dir / "samples" / "samples.npz", samples)
    results = evaluate(model, spec, data.held_out, data.train, seed)
    (plan.run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (plan.run_dir / "results.txt").write_text(results_table(results) + "\n")
    return results

