"""Execute a compiled plan: write the run directory, then train → sample → evaluate.

Run directory (ARCHITECTURE.md): ``spec.toml`` as given, ``spec.resolved.toml``, ``plan.txt``,
``checkpoints/`` (atomic, ``latest`` pointer), ``metrics.jsonl``, ``samples/``, ``results.json``
and ``results.txt`` (the printed table). Every stage is resumable: training continues from the
latest checkpoint; sampling and evaluation are recomputed from the final weights.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import tomli_w
import torch
from tabulate import tabulate

from mstar_engine.data.load import batches, check_for_family, load_dataset
from mstar_engine.metrics.distances import METRIC_FUNCTIONS, drop_last_coordinate_if_simplex, noise_floor
from mstar_engine.networks import build_mlp_denoiser
from mstar_engine.plan import Plan, render_plan
from mstar_engine.plan.compile import flatten
from mstar_engine.process.build import DiffusionProcess, build_process
from mstar_engine.process.normalise import TailNorm
from mstar_engine.sampling import sample, step_grid
from mstar_engine.spec import LoadedSpec
from mstar_engine.spec.schema import Spec
from mstar_engine.train.loop import train

#: Keys that may change between a run and its resumption without invalidating the checkpoint.
RESUMABLE_CHANGES = ("experiment.description", "train.steps", "train.epochs", "train.checkpoint_every",
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


@attrs.frozen
class Model:
    """What sampling needs: the process and the (EMA) denoiser."""

    process: DiffusionProcess
    denoiser: torch.nn.Module


def execute(plan: Plan, loaded: LoadedSpec, *, resume: bool = True, log: Callable[[str], None] = print) -> dict:
    spec = plan.spec
    seed = spec.experiment.seed
    write_run_files(plan, loaded)
    data = load_dataset(spec.data, seed)
    if spec.network.kind != "mlp":
        raise NotImplementedError("the U-Net and image datasets arrive with issue #5; use network.kind = \"mlp\"")
    torch.manual_seed(seed)
    process = build_process(spec.process, data.event_shape)
    for note in process.notes:
        log(f"note: {note}")
    check_for_family(data, process.family)
    norm = TailNorm.estimate(process.family, [data.train[:NORM_EXAMPLES]], process.rho(),
                             torch.Generator().manual_seed(seed + 2))
    denoiser = build_mlp_denoiser(process.family, norm, process.inputs, spec.network.mlp, spec.network.dropout)
    total = plan.stages[0].optimizer_steps
    if total is None:
        total = math.ceil(spec.train.epochs * data.train.shape[0] / spec.train.batch_size)
    ema = train(process, denoiser, lambda start: batches(data.train, spec.train.batch_size, seed, start),
                spec.train, total, plan.run_dir, seed=seed, fingerprint=fingerprint(spec), resume=resume, log=log)
    model = Model(process, ema.eval())
    samples = draw(model, spec.sample.num_samples, spec.sample.steps, seed=seed + 3,
                   batch_size=spec.sample.batch_size, final=spec.sample.final)
    save_samples(plan.run_dir / "samples" / "samples.npz", samples)
    results = evaluate(model, spec, data.held_out, data.train, seed)
    (plan.run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (plan.run_dir / "results.txt").write_text(results_table(results) + "\n")
    return results


def draw(model: Model, n: int, steps: int, *, seed: int, batch_size: int = 1000, final: str = "x0") -> torch.Tensor:
    """n samples with ``steps`` network evaluations (block rule below T), in batches."""
    family = model.process.family
    grid = step_grid(family.steps, steps)
    generator = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            out.append(sample(model.denoiser, family, min(batch_size, n - start), grid, model.process.rho(),
                              generator=generator, dtype=torch.float64, final=final))
    return torch.cat(out)


def save_samples(path: Path, samples: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pt":
        torch.save(samples, path)
    else:
        np.savez_compressed(path, samples=samples.numpy())


def evaluate(model: Model, spec: Spec, held_out: torch.Tensor, train_data: torch.Tensor, seed: int) -> dict:
    """Every metric at every step count, beside its noise floor (two independent data samples of
    the same size)."""
    ev = spec.eval
    simplex = model.process.family.domain == "simplex"
    n = min(ev.num_samples, held_out.shape[0])
    reference = drop_last_coordinate_if_simplex(held_out[:n].flatten(1), simplex)
    pool = torch.cat([train_data, held_out]).flatten(1)
    rows = []
    for steps in ev.steps:
        values = {name: [] for name in ev.metrics}
        for r in range(ev.repeats):
            x = draw(model, n, steps, seed=seed + 100 + r, batch_size=ev.batch_size).flatten(1)
            x = drop_last_coordinate_if_simplex(x, simplex)
            for name in ev.metrics:
                values[name].append(_metric(name, x, reference, ev))
        for name in ev.metrics:
            floor = noise_floor(lambda a, b: _metric(name, a, b, ev),
                                drop_last_coordinate_if_simplex(pool, simplex), n, repeats=ev.repeats,
                                generator=torch.Generator().manual_seed(seed + 7))
            rows.append({"metric": name, "steps": steps, "value": float(np.mean(values[name])),
                         "std": float(np.std(values[name])), "noise_floor": float(floor.mean), "samples": n})
    return {"experiment": spec.experiment.name, "family": spec.process.family, "data": spec.data.name,
            "coupling": model.process.coupling_kind, "results": rows}


def _metric(name: str, a, b, ev) -> float:
    if name == "knn-kl":
        return METRIC_FUNCTIONS[name](a, b, k=ev.knn_k)
    if name == "mmd":
        return METRIC_FUNCTIONS[name](a, b, bandwidth=ev.mmd_bandwidth)
    return METRIC_FUNCTIONS[name](a, b)


def results_table(results: dict) -> str:
    rows = [(r["metric"], r["steps"], f"{r['value']:.4f}", f"{r['noise_floor']:.4f}", r["samples"])
            for r in results["results"]]
    title = f"{results['experiment']}: {results['family']} ({results['coupling']} coupling) on {results['data']}"
    return title + "\n" + tabulate(rows, headers=["metric", "steps", "value", "noise floor", "samples"],
                                   tablefmt="github", disable_numparse=True)
