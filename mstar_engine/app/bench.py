"""``mstar bench SPEC``: training and sampling throughput of a spec, beside a plain PyTorch DDPM
training loop measured in the same process (same backbone architecture, same batches from the same
data source, ε-MSE), so the ratio does not depend on the machine's mood.

Training is timed through the real training loop (roll-outs, loss, optimiser, EMA) into a
temporary folder; the reference is the textbook loop: x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε with a linear
DDPM schedule, ‖ε − ε_θ(x_t, t)‖², AdamW, no EMA. The two loops take turns block by block (16
steps of one, then 16 of the other, the first block of each untimed) over several rounds, and the
ratio is the median of the rounds' ratios, printed with its range and a warning when the range is
wider than the ratio's distance from 1.
The share of a step spent building the inputs (data batches and roll-outs) is measured apart.
Peak memory is the accelerator's peak allocation on CUDA and the process's peak resident set on
the CPU.
"""
from __future__ import annotations

import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import attrs
import torch
from torch import Tensor
from tabulate import tabulate

from mstar_engine.util.clock import duration
from mstar_engine.app.report import model_words
from mstar_engine.app.runs import Model
from mstar_engine.networks.mlp import MLP
from mstar_engine.networks.unet import build_unet
from mstar_engine.spec.schema import Spec
from mstar_engine.distributed.group import SINGLE
from mstar_engine.train.inputs import ROLLOUT_BLOCK, BlockInputs
from mstar_engine.train.loop import Settings, train


def _peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


class PlainLoop:
    """A plain DDPM ε-MSE training loop of ``backbone`` on the batches of x0 that ``batches``
    yields (the same data pipeline as the real loop's): x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε with a linear
    schedule of T = 1000, ‖ε − ε_θ(x_t, t)‖², AdamW with torch's defaults, no EMA. :meth:`run`
    takes steps and times them; the loop's state (optimiser, batches, random stream) carries over
    from one call to the next."""
    T = 1000

    def __init__(self, backbone: torch.nn.Module, batches: Iterator[Tensor], num_classes: int = 0) -> None:
        self.backbone, self.batches, self.num_classes = backbone, batches, num_classes
        self.device = next(backbone.parameters()).device
        betas = torch.linspace(1e-4, 0.02, self.T, dtype=torch.float64)
        self.alpha_bar = torch.cumprod(1 - betas, 0).to(torch.float32).to(self.device)
        self.optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-4)
        self.generator = torch.Generator(device=self.device).manual_seed(0)
        self.spatial = getattr(backbone, "spatial", False)

    def run(self, steps: int) -> float:
        """Seconds that ``steps`` optimiser steps take."""
        g, device = self.generator, self.device
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            x0 = next(self.batches)
            t = torch.randint(0, self.T, (x0.shape[0],), generator=g, device=device)
            eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype, device=device)
            a = self.alpha_bar[t].reshape((-1,) + (1,) * (x0.ndim - 1))
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
            labels = torch.randint(0, self.num_classes, (x0.shape[0],), generator=g, device=device) \
                if self.num_classes else None
            out = self.backbone(x_t if self.spatial else x_t.flatten(1), t.to(x0.dtype), labels)
            loss = (out.reshape(eps.shape) - eps).pow(2).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        _synchronize(device)
        return time.perf_counter() - start


class _TakeTurns:
    """The real loop's periodic hook that makes the two loops take turns: after each block of the
    real loop's steps, the same number of the plain loop's. The first block of each is warm-up;
    after it, ``ours`` and ``plain`` collect the seconds of each block, the real loop's measured
    from the end of the plain block before it (so its logging and bookkeeping count)."""

    def __init__(self, plain: PlainLoop, every: int) -> None:
        self.plain, self.every = plain, every
        self.ours: list[float] = []
        self.theirs: list[float] = []
        self.mark: float | None = None

    def __call__(self, step: int, ema) -> None:
        _synchronize(self.plain.device)
        now = time.perf_counter()
        seconds = self.plain.run(self.every)
        if self.mark is not None:
            self.ours.append(now - self.mark)
            self.theirs.append(seconds)
        self.mark = time.perf_counter()

    def resumed(self, step: int) -> None:
        pass


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference_batches(source, repeat: int, device: torch.device) -> Iterator[Tensor]:
    """x0 batches from the run's own data source (x0 of (x0, labels) pairs), each repeated
    ``repeat`` times like the real loop's K steps t per example, on ``device``."""
    position = 0
    while True:
        for batch in source(position):
            x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
            position += x0.shape[0]
            yield x0.to(device=device, dtype=torch.float32).repeat_interleave(repeat, 0)


def _summary(values: list[float]) -> dict:
    """Median, lowest and highest of ``values``."""
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "low": ordered[0], "high": ordered[-1]}


def bench(spec: Spec, prepared, *, steps: int = 20, repeats: int = 5, sample_steps: int = 8) -> dict:
    """Training examples/s of ``spec`` (through :func:`train`) beside the plain DDPM loop
    (:class:`PlainLoop`), the two taking turns; peak memory; sampling seconds per network evaluation.

    The loops alternate block by block (:data:`ROLLOUT_BLOCK` steps of one, then of the other:
    A B A B ...), so a drift of the machine's speed falls on both alike, after one untimed block of
    each. ``repeats`` rounds of ``steps`` timed steps per loop (rounded up to whole blocks); a
    round's ratio is the plain loop's time over the real loop's in the round, and the reported
    ratio is the median over the rounds with its lowest and highest value."""
    B, k = spec.train.batch_size, spec.train.t_per_rollout
    denoiser = prepared.denoiser
    device = next(denoiser.parameters()).device
    family = prepared.process.family
    reference = _reference_backbone(spec, prepared, family.event_shape).to(device)
    num_classes = int(getattr(denoiser.backbone, "num_classes", 0))
    per_round = -(-steps // ROLLOUT_BLOCK)  # blocks per loop and round
    timed = per_round * ROLLOUT_BLOCK
    turns = _TakeTurns(PlainLoop(reference, _reference_batches(prepared.source, k, device), num_classes),
                       ROLLOUT_BLOCK)
    cfg = attrs.evolve(Settings.of(spec.train), checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        # the hook runs after steps W, 2W, ... before the last: one step past the last timed block
        ema = train(prepared.process, denoiser, prepared.source, cfg, (1 + repeats * per_round) * ROLLOUT_BLOCK + 1,
                    Path(tmp), seed=spec.experiment.seed, resume=False, log=lambda _: None,
                    label_dropout=prepared.label_dropout, periodic=turns)
    ours = [sum(turns.ours[i * per_round:(i + 1) * per_round]) / timed for i in range(repeats)]
    ref = [sum(turns.theirs[i * per_round:(i + 1) * per_round]) / timed for i in range(repeats)]
    pairs = B * k
    ratios = [r / o for o, r in zip(ours, ref)]  # per round: (pairs / ours) / (pairs / ref)
    ratio = _summary(ratios)
    model = Model(prepared.process, ema.eval())
    n = min(spec.sample.batch_size, spec.sample.num_samples)  # the batch the run will sample with
    per_eval, per_batch = _sampling_costs(model, n, min(sample_steps, prepared.process.family.steps), device,
                                          spec.sample.precision)
    inputs = _input_seconds(prepared, B, k, spec.experiment.seed, device)
    ours_step = statistics.median(ours)
    return {
        "spec": spec.experiment.name, "family": family.name, "coupling": prepared.process.coupling_kind,
        "kind": prepared.process.name,
        "batch_size": B, "t_per_rollout": k, "device": str(device), "threads": torch.get_num_threads(),
        "repeats": repeats, "timed_steps": timed, "warmup_steps": ROLLOUT_BLOCK,
        "train_examples_per_s": pairs / ours_step, "train_steps_per_s": 1 / ours_step,
        "reference_examples_per_s": pairs / statistics.median(ref),
        "ratio": ratio["median"], "ratio_low": ratio["low"], "ratio_high": ratio["high"],
        "ratios": ratios, "step_seconds": ours, "reference_step_seconds": ref,
        "block_seconds": turns.ours, "reference_block_seconds": turns.theirs,
        "input_seconds_per_step": inputs, "input_share": inputs / ours_step,
        "sample_batch": n, "sample_s_per_network_eval": per_eval, "sample_s_per_batch": per_batch,
        "peak_memory_gib": _peak_memory_gib(device),
        "parameters": sum(p.numel() for p in denoiser.parameters()),
    }


def _input_seconds(prepared, batch_size: int, k: int, seed: int, device: torch.device, blocks: int = 2) -> float:
    """Seconds per optimiser step spent building the real loop's inputs (the data batches and the
    kind's draws: the roll-out), the median of ``blocks`` + 1 roll-out blocks after a warm-up."""
    inputs = BlockInputs(prepared.process, prepared.source, batch_size, k, seed, device, SINGLE)
    inputs(0, prepared.process.block_state())
    seconds = []
    for index in range(1, blocks + 2):
        state = prepared.process.block_state()
        _synchronize(device)
        start = time.perf_counter()
        inputs(index, state)
        _synchronize(device)
        seconds.append((time.perf_counter() - start) / ROLLOUT_BLOCK)
    return statistics.median(seconds)


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


def ratio_words(result: dict) -> str:
    """The median ratio with its range over the rounds, and whether the range settles its side of 1."""
    low, high, ratio = result["ratio_low"], result["ratio_high"], result["ratio"]
    rounds = result.get("ratios") or []
    each = f": {', '.join(f'{r:.3f}' for r in rounds)}" if 1 < len(rounds) <= 12 else ""
    words = f"{ratio:.3f} (median of {result['repeats']} rounds{each}; range {low:.3f}-{high:.3f})"
    if low <= 1.0 <= high and result["repeats"] > 1:
        words += ": the spread is larger than the difference, so the two loops are not distinguishable here"
    return words


def bench_table(result: dict) -> str:
    rows = [
        ("training", f"{result['train_examples_per_s']:,.0f} examples/s ({result['train_steps_per_s']:.1f} steps/s, "
                     f"batch {result['batch_size']} x {result['t_per_rollout']} t; its median round)"),
        ("plain DDPM loop, same backbone and data", f"{result['reference_examples_per_s']:,.0f} examples/s (its median "
                                                    "round; the ratio below pairs each round's two loops)"),
        ("ratio (mstar / plain)", ratio_words(result)),
        ("inputs (data and roll-out)", f"{result['input_share']:.1%} of a training step "
                                       f"({result['input_seconds_per_step'] * 1e3:.1f} ms)"),
        ("sampling", f"{result['sample_s_per_network_eval'] * 1e3:.1f} ms per network evaluation + "
                     f"{result['sample_s_per_batch'] * 1e3:.1f} ms per batch of {result['sample_batch']} (prior draw "
                     "and kernel steps)"),
        ("peak memory", f"{result['peak_memory_gib']:.2f} GiB"),
        ("parameters", f"{result['parameters']:,}"),
        ("device", f"{result['device']}, {result['threads']} threads; {result['timed_steps']} timed steps per loop "
                   f"and round after {result['warmup_steps']} untimed"),
    ]
    for row in result.get("estimates", []):
        seconds = row["seconds"]
        rows.append((f"estimated {row['stage']}", row["basis"] if seconds is None else
                     f"{duration(seconds)} ({row['basis']})"))
    return f"{result['spec']}: {model_words(result)}\n" + \
        tabulate(rows, tablefmt="github", headers=["measure", "value"], disable_numparse=True)
