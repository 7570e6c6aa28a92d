"""Leave-one-class-out anomaly detection on the built-in digits: M-Star against the VAE baseline,
beside the published table (issue #16).

Protocol (``specs/digits-anomaly.toml``): for each anomaly digit d (default 1, 4, 5) a model trains
on the training split of the nine other digits (``data.classes``); every held-out digit (30 % of
the 1797, about 54 of them d) is scored — M-Star by its per-example bound (the Monte-Carlo sum of
the variational bound's KL terms), the VAE by its negative ELBO — and the AUPRC is computed with d
as the positive class. Each (digit, model) runs with ``--seeds`` (seed of the split, the
initialisation and the noise); the table gives the mean ± sd over seeds and the AUPRC of a random
score (the anomalies' share). The published rows (VAE, LEBM, M-Star on MNIST digits 1, 4, 5) are
copied from the M-Star README for reference; they are on MNIST 28×28, not these 8×8 digits.

Usage:
    python benchmarks/anomaly.py [--digits 1 4 5] [--seeds 0 1 2] [--models m-star vae]
                                 [--steps 2000] [--jobs 2]

Appends one line per run to ``benchmarks/results/anomaly.jsonl`` and prints the markdown table.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from mstar_engine.app.runner import execute
from mstar_engine.plan import compile_plan
from mstar_engine.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "digits-anomaly.toml"
MODELS = {"m-star": [], "vae": ["process.kind=vae"]}
#: The M-Star README's table (MNIST, digits 1, 4, 5), for reference.
PUBLISHED = {"VAE (published, MNIST)": (0.072, 0.345, 0.332), "LEBM (published, MNIST)": (0.342, 0.635, 0.622),
             "M-Star (published, MNIST)": (0.690, 0.918, 0.942)}
PUBLISHED_DIGITS = (1, 4, 5)


def one_run(model: str, digit: int, seed: int, steps: int) -> dict:
    """Train and evaluate one (model, anomaly digit, seed); the AUPRC row and the seconds taken."""
    with tempfile.TemporaryDirectory() as tmp:
        normal = [c for c in range(10) if c != digit]
        overrides = [*MODELS[model], f"data.classes={normal}", f"eval.anomaly_classes=[{digit}]",
                     f"experiment.seed={seed}", f"train.steps={steps}", "compare={}",
                     f"experiment.output_dir={tmp}", f"experiment.name={model}-{digit}-{seed}"]
        loaded = load_spec(SPEC, overrides)
        started = time.perf_counter()
        results = execute(compile_plan(loaded), loaded, log=lambda _: None)
        seconds = time.perf_counter() - started
    row = next(r for r in results["results"] if r["metric"] == "auprc")
    return {"model": model, "digit": digit, "seed": seed, "train_steps": steps, "auprc": row["value"],
            "random": row["noise_floor"], "examples": row["samples"], "seconds": round(seconds, 1)}


def table(records: list[dict], digits: list[int]) -> str:
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        cells = []
        for d in digits:
            values = [r["auprc"] for r in records if r["model"] == model and r["digit"] == d]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f} ({len(values)})" if values else "-")
        rows.append([f"{model} (ours, digits 8×8)", *cells])
    floors = [next((r["random"] for r in records if r["digit"] == d), float("nan")) for d in digits]
    rows.append(["random score (anomaly share)", *(f"{f:.3f}" for f in floors)])
    for name, values in PUBLISHED.items():
        rows.append([name, *(f"{dict(zip(PUBLISHED_DIGITS, values)).get(d, float('nan')):.3f}" for d in digits)])
    return tabulate(rows, headers=["model", *(f"digit {d}" for d in digits)], tablefmt="github",
                    disable_numparse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", nargs="+", type=int, default=[1, 4, 5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps of every model")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    args = parser.parse_args()
    out = ROOT / "benchmarks" / "results" / "anomaly.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tasks = [(m, d, s, args.steps) for d in args.digits for s in args.seeds for m in args.models]
    records = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(1,)) as pool:
        for future in as_completed([pool.submit(one_run, *t) for t in tasks]):
            record = {**future.result(), "machine": f"{platform.node()} ({multiprocessing.cpu_count()} cores)"}
            records.append(record)
            with out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            print(json.dumps(record), flush=True)
    records.sort(key=lambda r: (list(MODELS).index(r["model"]), r["digit"], r["seed"]))
    print(table(records, args.digits))


if __name__ == "__main__":
    main()
