"""The execution plan: ordered stages with resolved step counts, devices and output paths."""
from __future__ import annotations

import math
import os
from pathlib import Path

import attrs

from mstar_engine.data.catalog import DATASETS
from mstar_engine.distributed.env import process_count, resolve_backend, torchrun_world
from mstar_engine.spec import Issue, LoadedSpec, Location
from mstar_engine.spec.resolve import resolve
from mstar_engine.spec.schema import Spec


@attrs.frozen
class Stage:
    name: str
    description: str
    optimizer_steps: int | None
    evaluations: str          # network evaluations per sample
    examples: int | None      # training examples seen
    output: str


@attrs.frozen
class Devices:
    accelerator: str
    processes: int
    backend: str
    batch_per_process: int
    micro_batch: int


@attrs.frozen
class Plan:
    spec: Spec                # resolved
    run_dir: Path
    stages: tuple[Stage, ...]
    devices: Devices
    outputs: tuple[tuple[str, str], ...]
    settings: tuple[tuple[str, str, str], ...]   # key, value, source
    warnings: tuple[Issue, ...]


def train_size(spec: Spec) -> int | None:
    """Training examples after the hold-out split; None when only known at run time."""
    info = DATASETS[spec.data.name]
    total = spec.data.num_examples or info.size
    if not total:
        return None
    return total - int(round(total * spec.data.holdout))


def resolve_devices(spec: Spec, cuda_count: int | None, launch: int | None = None) -> tuple[Devices, list[Issue]]:
    """The devices of a run. ``launch``: the processes actually started (``--nproc-per-node``);
    torchrun's count wins, and ``devices.processes`` is the default. ``devices.processes`` itself
    also fixes the roll-out streams (see :mod:`mstar_engine.train.loop`), so the results do not
    depend on the launch."""
    dev = spec.devices
    if cuda_count is None:
        import torch
        cuda_count = torch.cuda.device_count()
    issues = []
    processes = process_count(launch, dev.processes)
    accelerator = dev.accelerator if dev.accelerator != "auto" else ("cuda" if cuda_count else "cpu")
    where = Location("<devices>")
    if accelerator == "cuda" and cuda_count == 0:
        issues.append(Issue(where, ("devices", "accelerator"), "accelerator = \"cuda\" but no GPU is visible",
                            'use accelerator = "auto" or "cpu" on this machine', "environment"))
    elif accelerator == "cuda" and processes > cuda_count and torchrun_world() is None:
        issues.append(Issue(where, ("devices", "processes"), f"{processes} processes need {processes} GPUs; "
                            f"{cuda_count} visible", f"use {cuda_count} processes or fewer", "environment"))
    backend = resolve_backend(dev.backend, accelerator)
    if backend == "nccl" and accelerator == "cpu" and processes > 1:
        issues.append(Issue(where, ("devices", "backend"), "the nccl backend needs GPUs and the run is on the CPU",
                            'use backend = "gloo" (or "auto")', "environment"))
    if processes != dev.processes:
        sizes = [("train", spec.train.batch_size)]
        if spec.distill is not None and spec.distill.batch_size is not None:
            sizes.append(("distill", spec.distill.batch_size))
        for what, size in sizes:
            if size % processes:
                issues.append(Issue(where, (what, "batch_size"), f"batch_size {size} does not split evenly over "
                                    f"{processes} processes", f"use a multiple of {processes}", "environment"))
        if spec.train.batch_size % processes == 0 and (spec.train.batch_size // processes) % spec.train.accumulation:
            issues.append(Issue(where, ("train", "accumulation"), f"the per-process batch "
                                f"{spec.train.batch_size // processes} does not split into {spec.train.accumulation} "
                                "micro-batches", "change train.accumulation or the number of processes",
                                "environment"))
        if dev.processes % processes:
            issues.append(Issue(where, ("devices", "processes"), f"{processes} processes do not divide the "
                                f"{dev.processes} roll-out streams of devices.processes = {dev.processes}: every "
                                "process builds every roll-out (same results, more work per process)",
                                f"set devices.processes = {processes} (or a multiple) for a new run", "warning"))
    if accelerator == "cpu" and processes > (os.cpu_count() or 1):
        issues.append(Issue(where, ("devices", "processes"), f"{processes} processes on {os.cpu_count()} CPU cores "
                            "run slower than one process", f"use {os.cpu_count()} processes or fewer", "warning"))
    per_process = spec.train.batch_size // processes
    return Devices(accelerator, processes, backend, per_process,
                   max(per_process // spec.train.accumulation, 1)), issues


def model_summary(process, event_shape: tuple[int, ...] | None = None) -> str:
    """The trained model in a few words: the exponential family and its coupling, or the kind
    (the VAE's latent shape when the data's ``event_shape`` (C, H, W) is given)."""
    if process.kind == "flow-matching":
        return f"flow matching ({process.flow.time} times, {process.flow.solver} sampler)"
    if process.kind == "energy-score":
        e = process.energy
        return f"energy-score denoiser ({e.score} score, beta {e.beta:g}, lambda {e.lam:g}, {e.draws} draws)"
    if process.kind == "vae":
        v = process.vae
        latent = f"{v.latent_channels}×{event_shape[1] // 4}×{event_shape[2] // 4}" if event_shape and \
            len(event_shape) == 3 else f"{v.latent_channels}×H/4×W/4"
        return f"VAE baseline (latent {latent}, " + \
            ("negative ELBO)" if v.beta == 1 else f"KL weight beta {v.beta:g})")
    return f"{process.family} {process.coupling.kind} coupling"


def compile_plan(loaded: LoadedSpec, cuda_count: int | None = None, processes: int | None = None) -> Plan:
    """The plan of a loaded spec; ``processes`` is the launch's process count when it is not the
    spec's ``devices.processes`` (``--nproc-per-node``)."""
    spec = resolve(loaded.spec)
    devices, device_issues = resolve_devices(spec, cuda_count, processes)
    spec = attrs.evolve(spec, devices=attrs.evolve(spec.devices, accelerator=devices.accelerator,
                                                    backend=devices.backend))
    run_dir = Path(spec.experiment.output_dir) / spec.experiment.name
    ckpt = run_dir / "checkpoints"
    T = spec.process.steps
    stages = []

    train = spec.train
    n_train = train_size(spec)
    if train.epochs is None:
        steps, how = train.steps, f"{train.steps} optimiser steps"
    elif n_train is not None:
        steps = math.ceil(train.epochs * n_train / train.batch_size)
        how = f"{train.epochs} epochs of {n_train} examples"
    else:
        steps, how = None, f"{train.epochs} epochs (dataset size counted at run time)"
    if train.eval_every:
        how += f", evaluated every {train.eval_every}"
    event_shape = DATASETS[spec.data.name].event_shape(spec.data.dim, spec.data.image_size)
    # the VAE samples with one decoder call, whatever sample.steps and eval.steps say
    one_call = spec.process.kind == "vae"
    stages.append(Stage("train", f"{model_summary(spec.process, event_shape)}, {how}", steps,
                        "1 (decoder)" if one_call else f"{T} steps", steps * train.batch_size if steps else None,
                        str(ckpt / "train")))

    d = spec.distill
    if d is not None and d.method != "progressive":
        for r in range(1, (d.rounds if d.method == "reflow" else 1) + 1):
            what = (f"reflow round {r}: {d.pairs or 'training-set size'} pairs from the teacher's ODE "
                    f"({d.teacher_steps} evaluations), lr {d.lr:g}") if d.method == "reflow" else \
                (f"consistency distillation over the teacher's {d.teacher_steps}-step deterministic sampler, "
                 f"EMA target {d.ema_target:g}, lr {d.lr:g}→0"
                 + ("" if d.consistency_weight == "uniform" else f", {d.consistency_weight} loss weights"))
            folder = f"reflow-{r}" if d.method == "reflow" else f"consistency-{d.to}"
            stages.append(Stage(f"distill {d.method}", what, d.steps_per_stage, f"{d.to} steps",
                                d.steps_per_stage * d.batch_size, str(ckpt / folder)))
    elif d is not None:
        for previous, n in zip([T, *d.stages], d.stages):
            stages.append(Stage(f"distill {previous}→{n}", f"student makes 1 step where the teacher makes 2 "
                                f"({d.coupling} sampler, {d.target} target), lr {d.lr:g}→0", d.steps_per_stage,
                                f"{n} steps", d.steps_per_stage * d.batch_size, str(ckpt / f"distill-{n}")))

    stages.append(Stage("sample", f"{spec.sample.num_samples} samples" + ("" if one_call else
                        f", final {spec.sample.final}"), None,
                        "1 (decoder)" if one_call else f"{spec.sample.steps} steps", None, str(run_dir / "samples")))
    if spec.eval.metrics:
        stages.append(Stage("eval", f"{', '.join(spec.eval.metrics)} on {spec.eval.num_samples} samples "
                            f"× {spec.eval.repeats}", None,
                            "1 (decoder)" if one_call else ", ".join(map(str, spec.eval.steps)), None,
                            str(run_dir / "results.json")))
    for name, extra in spec.compare.items():
        stages.append(Stage(f"compare {name}", "train, sample and evaluate with " + " ".join(extra), None, None,
                            None, str(run_dir / "compare" / name)))

    outputs = (
        ("spec as given", str(run_dir / "spec.toml")),
        ("resolved spec", str(run_dir / "spec.resolved.toml")),
        ("this plan", str(run_dir / "plan.txt")),
        ("checkpoints (latest pointer)", str(ckpt / "train" / "latest")),
        ("training log", str(run_dir / "metrics.jsonl")),
        ("samples", str(run_dir / "samples")),
        ("results", str(run_dir / "results.json")),
    ) + ((("comparison table", str(run_dir / "comparison.txt")),) if spec.compare else ())
    return Plan(spec, run_dir, tuple(stages), devices, outputs, tuple(settings_rows(loaded, spec)),
                tuple(loaded.warnings) + tuple(device_issues))


def flatten(obj, path: tuple = ()) -> list[tuple[tuple, object]]:
    if attrs.has(type(obj)):
        return [item for f in attrs.fields(type(obj)) for item in flatten(getattr(obj, f.name), path + (f.name,))]
    return [(path, obj)]


def settings_rows(loaded: LoadedSpec, resolved: Spec) -> list[tuple[str, str, str]]:
    raw = dict(flatten(loaded.spec))
    rows = []
    for path, value in flatten(resolved):
        source = loaded.source(path)
        if raw.get(path, value) != value:
            source = "derived" if source == "default" else f"{source}, derived"
        rows.append((".".join(path), format_value(value), source))
    return rows


def format_value(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)
