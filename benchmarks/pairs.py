"""Which coupling / input pairs work, per family (MATH.md §2, "schedule and coupling go together").

For every family's shipped spec (``specs/<family>.toml``), train the same network for the same
number of optimiser steps with each pair below (schedule ``auto``: the family's default for that
coupling), then report kNN-KL, MMD and energy distance against held-out data, beside the noise
floor (kNN-KL is not defined for categorical samples, which repeat exactly). Every run uses T = 64, batch 32 examples × 4 steps t per roll-out (128 pairs per step).

Usage:
    python benchmarks/pairs.py --steps 2000 [--families dirichlet beta] [--threads 1]

Appends to ``benchmarks/results/pairs.jsonl``; prints one table per family and the best pair by
energy distance (the one metric defined and stable on every domain).
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from mstar_engine.plan import compile_plan
from mstar_engine.app.runner import execute
from mstar_engine.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("gaussian", "beta", "dirichlet", "gamma", "vmf", "von-mises", "wishart", "categorical")
PAIRS = {
    "star-shaped (independent, tail)": ["process.coupling.kind=independent", "process.inputs=tail"],
    "M-Star ddpm (tail+state)": ["process.coupling.kind=ddpm", "process.inputs=tail+state"],
    "M-Star learned (tail+state)": ["process.coupling.kind=learned", "process.inputs=tail+state"],
    "deterministic (tail+state)": ["process.coupling.kind=deterministic", "process.inputs=tail+state"],
    "ddpm, state only": ["process.coupling.kind=ddpm", "process.inputs=state"],
}
COMMON = ["process.steps=64", "train.batch_size=32", "train.t_per_rollout=4", "train.warmup_steps=100",
          "eval.num_samples=2000", "eval.repeats=1",
          "sample.num_samples=2", "compare={}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", nargs="*", default=list(PAIRS), choices=list(PAIRS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_file = ROOT / "benchmarks" / "results" / "pairs.jsonl"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    for family in args.families:
        rows = []
        for label in args.pairs:
            overrides = PAIRS[label]
            with tempfile.TemporaryDirectory() as tmp:
                metrics = '["mmd", "energy"]' if family == "categorical" else '["knn-kl", "mmd", "energy"]'
                extra = [*COMMON, f"eval.metrics={metrics}", *overrides, f"train.steps={args.steps}", f"train.log_every={args.steps}",
                         f"train.checkpoint_every={args.steps}", f"experiment.output_dir={tmp}"]
                start = time.perf_counter()
                loaded = load_spec(ROOT / "specs" / f"{family}.toml", extra, ready=True)
                results = execute(compile_plan(loaded), loaded, resume=False, log=lambda _: None)
                seconds = time.perf_counter() - start
            values = {r["metric"]: r for r in results["results"]}
            record = {"family": family, "pair": label, "overrides": overrides, "coupling_used": results["coupling"],
                      "steps": args.steps, "seconds": round(seconds, 1),
                      **{m: values[m]["value"] for m in values}, **{f"{m}_floor": values[m]["noise_floor"] for m in values},
                      "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}",
                      "date": time.strftime("%Y-%m-%d")}
            with out_file.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            rows.append([label, results["coupling"], *(f"{values[m]['value']:.4f}" if m in values else "-"
                                                       for m in ("knn-kl", "mmd", "energy")),
                         f"{seconds:.0f}"])
            print(f"{family}: {label}: " + ", ".join(f"{m} {values[m]['value']:.4f}" for m in values), flush=True)
        floors = [f"{values[m]['noise_floor']:.4f}" if m in values else "-" for m in ("knn-kl", "mmd", "energy")]
        rows.append(["noise floor", "", *floors, ""])
        best = min(rows[:-1], key=lambda r: float(r[4]))
        print(f"\n{family} ({args.steps} steps, T = 64); best by energy: {best[0]}")
        print(tabulate(rows, headers=["pair", "coupling used", "kNN-KL", "MMD", "energy", "s"], tablefmt="github",
                       disable_numparse=True), flush=True)


if __name__ == "__main__":
    main()
