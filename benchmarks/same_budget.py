"""Same-budget comparison on the published synthetic mixtures (issue #4).

Each variant trains for a fixed wall-clock budget on this machine: a short probe run measures its
optimiser steps per second, the full run is given ``steps = budget × probe speed`` (so the
learning-rate schedule ends where the budget does), then samples with the EMA weights and reports
the symmetrised kNN-KL (k = 10; the simplex without its last coordinate, SPD matrices on their
flattened entries) as the mean of three 5,000-sample draws, beside the noise floor (two
independent data samples of the same size).

Usage:
    python benchmarks/same_budget.py --minutes 10                 # every dataset and variant
    python benchmarks/same_budget.py --minutes 1 --only dirichlet --variants star-shaped

Results are appended to ``benchmarks/results/same_budget.jsonl`` and printed as a table.
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
SPECS = {"dirichlet": ROOT / "specs" / "dirichlet.toml", "wishart": ROOT / "specs" / "wishart.toml"}
#: Overrides of each variant on top of the family's shipped spec.
VARIANTS = {
    "star-shaped": ["process.coupling.kind=independent", "process.inputs=tail", "train.batch_size=128",
                    "train.t_per_rollout=1"],
    # Network batch 128 = 32 examples × 4 steps t from one roll-out (the coupled roll-out costs more
    # than the network; four t per roll-out amortise it).
    "m-star": ["process.coupling.kind=ddpm", "process.inputs=tail+state", "train.batch_size=32",
               "train.t_per_rollout=4"],
    "gaussian-ddpm": ["process.family=gaussian", "process.schedule.name=linear", "process.coupling.kind=ddpm",
                      "process.inputs=state", "process.loss=eps-mse", "train.batch_size=128",
                      "train.t_per_rollout=1"],
}
PROBE_STEPS = 300


def run(spec: Path, overrides: list[str], out: Path) -> dict:
    loaded = load_spec(spec, overrides, ready=True)
    return execute(compile_plan(loaded), loaded, resume=False, log=lambda _: None)


def steps_per_second(out: Path) -> float:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    return last["step"] / last["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per variant")
    parser.add_argument("--only", nargs="*", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra overrides for every variant, e.g. train.lr_schedule=cosine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results_file = ROOT / "benchmarks" / "results" / "same_budget.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.only:
        for variant in args.variants:
            with tempfile.TemporaryDirectory() as tmp:
                base = VARIANTS[variant] + args.set + [f"experiment.output_dir={tmp}"]
                probe = base + ["experiment.name=probe", f"train.steps={PROBE_STEPS}", "train.log_every=100",
                                "train.warmup_steps=0", "eval.metrics=[]", "eval.num_samples=2",
                                "sample.num_samples=2"]
                run(SPECS[dataset], probe, Path(tmp) / "probe")
                speed = steps_per_second(Path(tmp) / "probe")
                steps = int(speed * args.minutes * 60)
                full = base + ["experiment.name=full", f"train.steps={steps}", f"train.log_every={max(steps // 20, 1)}",
                               f"train.checkpoint_every={steps}", "eval.metrics=[\"knn-kl\"]", "eval.repeats=3",
                               "eval.num_samples=5000", "sample.num_samples=2"]
                start = time.perf_counter()
                results = run(SPECS[dataset], full, Path(tmp) / "full")
                total = time.perf_counter() - start
                trained = steps_per_second(Path(tmp) / "full")
            row = next(r for r in results["results"] if r["metric"] == "knn-kl")
            record = {"dataset": dataset, "variant": variant, "minutes": args.minutes, "steps": steps,
                      "steps_per_s": round(trained, 1), "train_s": round(steps / trained, 1),
                      "total_s": round(total, 1), "knn_kl": row["value"], "knn_kl_std": row["std"],
                      "noise_floor": row["noise_floor"], "overrides": VARIANTS[variant] + args.set,
                      "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}",
                      "date": time.strftime("%Y-%m-%d")}
            with results_file.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            rows.append([dataset, variant, steps, f"{trained:.1f}", f"{row['value']:.4f} ± {row['std']:.4f}",
                         f"{row['noise_floor']:.4f}"])
            print(tabulate(rows[-1:], tablefmt="plain"), flush=True)
    print(tabulate(rows, headers=["data", "variant", "steps", "it/s", "kNN-KL (mean ± sd of 3)", "noise floor"],
                   tablefmt="github"))


if __name__ == "__main__":
    main()
