"""``mstar bench SPEC``: training and sampling throughput of a spec, beside a plain PyTorch DDPM
training step measured in the same process (same backbone architecture, same batch, ε-MSE), so
the ratio does not depend on the machine's mood.

Training is timed through the real training loop (roll-outs, loss, optimiser, EMA) into a
temporary folder; the reference is the textbook loop: x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε with a linear
DDPM schedule, ‖ε − ε_θ(x_t, t)‖², AdamW, no EMA. Peak memory is the accelerator's peak allocation
on CUDA and the process's peak resident set on the CPU.
"""
from __future__ import annotations

import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import attrs
import torch
from tabulate import tabulate

from mstar_engine.util.clock import duration
from mstar_engine.app.report import model_words
from mstar_engine.app.runs import Model
from mstar_engine.networks.mlp import MLP
from mstar_engine.networks.unet import build_unet
from mstar_engine.spec.schema import Spec
from mstar_engine.train.loop import Settings, train


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def reference_step_time(backbone: torch.nn.Module, x0: torch.Tensor, steps: int, warmup: int,
                        num_classes: int = 0) -> float:
    """Seconds per optimiser step of a plain DDPM ε-MSE training loop on batches like ``x0``."""
    T = 1000
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    device = x0.device
    alpha_bar = torch.cumprod(1 - betas, 0).to(x0.dtype).to(device)
    opt = torch.optim.AdamW(backbone.parameters(), lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    spatial = getattr(backbone, "spatial", False)
    for i in range(warmup + steps):
        if i == warmup:
            _synchronize(device)
            start = time.perf_counter()
        t = torch.randint(0, T, (x0.shape[0],), generator=g, device=device)
        eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype, device=device)
        a = alpha_bar[t].reshape((-1,) + (1,) * (x0.ndim - 1))
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        inp = x_t if spatial else x_t.flatten(1)
        labels = torch.randint(0, num_classes, (x0.shape[0],), generator=g, device=device) if num_classes else None
        out = backbone(inp, t.to(x0.dtype), labels)
        loss = (out.reshape(eps.shape) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _synchronize(device)
    return (time.perf_counter() - start) / steps


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(spec: Spec, prepared, *, steps: int = 20, warmup: int = 5, sample_steps: int = 8) -> dict:
    """Training examples/s of ``spec`` (through :func:`train`) and of the plain DDPM reference,
    their ratio, peak memory, and sampling seconds per network evaluation."""
    B = spec.train.batch_size
    denoiser = prepared.denoiser
    device = next(denoiser.parameters()).device
    family = prepared.process.family
    reference = _reference_backbone(spec, prepared, family.event_shape)
    x0 = next(iter(prepared.source(0)))
    x0 = (x0[0] if isinstance(x0, (tuple, list)) else x0).to(device=device, dtype=torch.float32)
    x0 = x0.repeat_interleave(spec.train.t_per_rollout, 0)  # the same number of (x0, t) pairs per step
    cfg = attrs.evolve(Settings.of(spec.train), checkpoint_every=10**9, log_every=10**9)

    def run(total: int, folder: Path) -> torch.nn.Module:
        return train(prepared.process, denoiser, prepared.source, cfg, total, folder, seed=spec.experiment.seed,
                     resume=False, log=lambda _: None, label_dropout=prepared.label_dropout)
    with tempfile.TemporaryDirectory() as tmp:
        run(warmup, Path(tmp))
        _synchronize(device)
        start = time.perf_counter()
        ema = run(warmup + steps, Path(tmp) / "b")
        _synchronize(device)
        # the loop's own clock (metrics.jsonl) runs from its first step to its last, without the set-up
        # and the final checkpoint write that every run pays once
        logged = json.loads((Path(tmp) / "b" / "metrics.jsonl").read_text().splitlines()[-1])["seconds"]
        ours = min(time.perf_counter() - start, logged) / (warmup + steps)
    num_classes = int(getattr(denoiser.backbone, "num_classes", 0))
    ref = reference_step_time(reference.to(device), x0, steps, warmup, num_classes)
    model = Model(prepared.process, ema.eval())
    n = min(spec.sample.batch_size, spec.sample.num_samples)  # the batch the run will sample with
    per_eval, per_batch = _sampling_costs(model, n, min(sample_steps, prepared.process.family.steps), device,
                                          spec.sample.precision)
    return {
        "spec": spec.experiment.name, "family": family.name, "coupling": prepared.process.coupling_kind,
        "kind": prepared.process.name,
        "batch_size": B, "t_per_rollout": spec.train.t_per_rollout, "device": str(device),
        "threads": torch.get_num_threads(),
        "train_examples_per_s": B * spec.train.t_per_rollout / ours, "train_steps_per_s": 1 / ours,
        "reference_examples_per_s": x0.shape[0] / ref, "ratio": (B * spec.train.t_per_rollout / ours) / (x0.shape[0] / ref),
        "sample_batch": n, "sample_s_per_network_eval": per_eval, "sample_s_per_batch": per_batch,
        "peak_memory_gib": _peak_memory_gib(device),
        "parameters": sum(p.numel() for p in denoiser.parameters()),
    }


def _sampling_costs(model: Model, n: int, k: int, device: torch.device, precision: str) -> tuple[float, float]:
    """Seconds per network evaluation and per batch of ``n`` samples besides them (the prior draw
    and the T kernel steps of the reverse chain, made whatever the number of evaluations): two
    timed draws, with 1 and ``k`` evaluations (the fastest of three each), after a warm-up."""
    def timed(evaluations: int) -> float:
        _synchronize(device)
        start = time.perf_counter()
        model.sample(n, evaluations, seed=0, batch_size=n, precision=precision)
        _synchronize(device)
        return time.perf_counter() - start
    timed(1)  # warm-up: first-call allocations
    one, many = min(timed(1) for _ in range(3)), min(timed(k) for _ in range(3))  # the least disturbed of 3
    per_eval = max(many - one, 0.0) / (k - 1) if k > 1 else one
    return per_eval, max(one - per_eval, 0.0)


def estimate(plan, result: dict) -> list[dict]:
    """``{stage, seconds, basis}`` for each stage of ``plan`` from the throughput in ``result`` (one
    process): training from the measured optimiser step, sampling and evaluation from the measured
    costs of a sampling batch (per sample: a fixed part and one per network evaluation). Distillation
    stages, Inception features and ``[compare]`` variants are not timed: their seconds are None."""
    spec = plan.spec

    def sampling(samples: int, evaluations: int) -> float:
        n = result["sample_batch"]
        return samples / n * (result["sample_s_per_batch"] + evaluations * result["sample_s_per_network_eval"])
    ev = spec.eval
    evaluation = (ev.repeats * sum(sampling(ev.num_samples, k) for k in ev.steps),
                  f"{ev.repeats} × {ev.num_samples} samples × {'+'.join(map(str, ev.steps))} evaluations" +
                  (", without Inception" if any(m in ("fid", "is") for m in ev.metrics) else ""))
    rows = []
    for stage in plan.stages:
        seconds, basis = None, "not timed by mstar bench"
        if stage.name == "train" and stage.optimizer_steps:
            seconds = stage.optimizer_steps / result["train_steps_per_s"]
            basis = f"{stage.optimizer_steps} steps at {result['train_steps_per_s']:.2f} steps/s"
        elif stage.name == "sample":
            seconds = sampling(spec.sample.num_samples, spec.sample.steps)
            basis = f"{spec.sample.num_samples} samples × {spec.sample.steps} evaluations"
        elif stage.name == "eval":
            seconds, basis = evaluation
        rows.append({"stage": stage.name, "seconds": seconds, "basis": basis})
        if stage.name == "train" and spec.train.eval_every and stage.optimizer_steps:
            times = (stage.optimizer_steps - 1) // spec.train.eval_every
            rows.append({"stage": "eval during training", "seconds": times * evaluation[0],
                         "basis": f"{times} × the eval stage (train.eval_every = {spec.train.eval_every})"})
    if spec.compare:
        rows.append({"stage": "compare", "seconds": None, "basis": f"{len(spec.compare)} variants, each a run of "
                     "its own: not timed (mstar bench SPEC with a variant's overrides times one)"})
    return rows


def _reference_backbone(spec: Spec, prepared, event_shape: tuple[int, ...]) -> torch.nn.Module:
    """The same architecture as the spec's backbone, reading the state alone and predicting ε."""
    backbone = prepared.denoiser.backbone
    num_classes = int(getattr(backbone, "num_classes", 0))
    if getattr(backbone, "spatial", False):
        return build_unet(event_shape[0], event_shape[0], event_shape[-1], cfg=spec.network.unet,
                          preset=spec.network.preset, dropout=spec.network.dropout, num_classes=num_classes)
    m = spec.network.mlp
    n = math.prod(event_shape)
    return MLP(n, n, hidden=m.hidden, blocks=m.blocks, time_dim=m.time_dim, dropout=spec.network.dropout,
               num_classes=num_classes)


def bench_table(result: dict) -> str:
    rows = [
        ("training", f"{result['train_examples_per_s']:,.0f} examples/s ({result['train_steps_per_s']:.1f} steps/s, "
                     f"batch {result['batch_size']} x {result['t_per_rollout']} t)"),
        ("plain DDPM step, same backbone", f"{result['reference_examples_per_s']:,.0f} examples/s"),
        ("ratio (mstar / plain)", f"{result['ratio']:.2f}"),
        ("sampling", f"{result['sample_s_per_network_eval'] * 1e3:.1f} ms per network evaluation + "
                     f"{result['sample_s_per_batch'] * 1e3:.1f} ms per batch of {result['sample_batch']} (prior draw "
                     "and kernel steps)"),
        ("peak memory", f"{result['peak_memory_gib']:.2f} GiB"),
        ("parameters", f"{result['parameters']:,}"),
        ("device", f"{result['device']}, {result['threads']} threads"),
    ]
    for row in result.get("estimates", []):
        seconds = row["seconds"]
        rows.append((f"estimated {row['stage']}", row["basis"] if seconds is None else
                     f"{duration(seconds)} ({row['basis']})"))
    return f"{result['spec']}: {model_words(result)}\n" + \
        tabulate(rows, tablefmt="github", headers=["measure", "value"], disable_numparse=True)
