"""Progressive distillation per family: the T-step teacher, the undistilled K-step sampler (block
rule; DDIM for a deterministic Gaussian teacher) and the distilled K-step student, side by side.

Each configuration trains a teacher from the family's shipped spec (``specs/<family>.toml``) at
T = 64, distils it 64 → 32 → 16 → 8 (``[distill]`` of the same run) and evaluates every model on
the same held-out data (kNN-KL, energy distance; the mean of ``--repeats`` draws).

Usage:
    python benchmarks/distill.py [--configs gaussian-ddim dirichlet-star] [--train-steps 5000]
                                 [--stage-steps 1500] [--threads 2]

Appends to ``benchmarks/results/distill.jsonl`` and prints one markdown table. Goal (issue #6):
student within 10 % of the teacher, and at least 2x better than the undistilled K-step sampler.
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
CONFIGS = {
    # Gaussian DDPM marginals, state input: DDIM teacher (ρ = 1), Salimans & Ho landing target
    "gaussian-ddim": ("gaussian", ["process.inputs=state", "distill.coupling=deterministic"]),
    # the same model sampled ancestrally (ρ*_t), noise shared by teacher and student
    "gaussian-ancestral": ("gaussian", ["process.inputs=state", "distill.coupling=model"]),
    # von Mises on the circle, state input: the deterministic copula sampler (ρ = 1), landing target
    "von-mises-ddim": ("von-mises", ["process.inputs=state", "distill.coupling=deterministic"]),
    # Beta and Gamma, state input, ddpm coupling in training: the deterministic sampler, landing target
    "beta-ddim": ("beta", ["process.coupling.kind=ddpm", "process.inputs=state", "distill.coupling=deterministic"]),
    "gamma-ddim": ("gamma", ["process.coupling.kind=ddpm", "process.inputs=state", "distill.coupling=deterministic"]),
    # the same von Mises model distilled with the teacher target instead (MATH.md §3, tail rule)
    "von-mises-ddim-teacher-target": ("von-mises", ["process.inputs=state", "distill.coupling=deterministic",
                                                    "distill.target=teacher"]),
    # star-shaped Dirichlet reading the tail statistic: its own sampler, the teacher target
    "dirichlet-star": ("dirichlet", ["process.coupling.kind=independent", "process.inputs=tail"]),
    # star-shaped Beta reading the tail statistic
    "beta-star": ("beta", ["process.coupling.kind=independent", "process.inputs=tail"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=64, help="teacher steps T")
    parser.add_argument("--to", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=5000)
    parser.add_argument("--stage-steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-4, help="distillation learning rate")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = ROOT / "benchmarks" / "results" / "distill.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.configs:
        family, extra = CONFIGS[name]
        with tempfile.TemporaryDirectory() as tmp:
            overrides = [*extra, f"process.steps={args.steps}", f"train.steps={args.train_steps}",
                         f"distill.to={args.to}", f"distill.steps_per_stage={args.stage_steps}",
                         f"distill.lr={args.lr}", f"eval.num_samples={args.samples}", f"eval.repeats={args.repeats}",
                         f"sample.num_samples={args.samples}", 'eval.metrics=["knn-kl","energy"]',
                         f"experiment.output_dir={tmp}", f"experiment.name={name}"]
            loaded = load_spec(ROOT / "specs" / f"{family}.toml", overrides)
            started = time.perf_counter()
            results = execute(compile_plan(loaded), loaded, log=lambda _: None)
            seconds = time.perf_counter() - started
        spec = compile_plan(loaded).spec
        value = {(r.get("model"), r["metric"], r["steps"]): r["value"] for r in results["results"]}
        floor = {r["metric"]: r["noise_floor"] for r in results["results"]}
        record = {"config": name, "family": family, "overrides": overrides[:len(extra)], "T": args.steps,
                  "K": args.to, "train_steps": args.train_steps, "stage_steps": args.stage_steps, "lr": args.lr,
                  "distill_coupling": spec.distill.coupling, "target": spec.distill.target,
                  "seconds": round(seconds, 1), "threads": args.threads, "machine": platform.processor() or
                  platform.machine(), "torch": torch.__version__}
        for metric in ("knn-kl", "energy"):
            record[metric] = {"teacher_T": value[("teacher", metric, args.steps)],
                              "undistilled_K": value[("teacher", metric, args.to)],
                              "student_K": value[("student", metric, args.to)], "noise_floor": floor[metric]}
        with out.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        rows.append(record)
        print(json.dumps(record), flush=True)
    table = []
    for r in rows:
        for metric in ("knn-kl", "energy"):
            m = r[metric]
            table.append((r["config"], f"{r['distill_coupling']} / {r['target']}", metric, f"{m['teacher_T']:.4f}",
                          f"{m['undistilled_K']:.4f}", f"{m['student_K']:.4f}", f"{m['noise_floor']:.4f}"))
    print(tabulate(table, headers=["config", "sampler / target", "metric", f"teacher {args.steps}",
                                   f"undistilled {args.to}", f"student {args.to}", "noise floor"],
                   tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main()
