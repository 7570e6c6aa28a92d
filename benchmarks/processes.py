"""Training speed over several processes (torch.distributed) beside one process, in one script.

Each configuration runs ``mstar run SPEC`` for ``--steps`` optimiser steps with one process and
with ``--processes`` processes (``--nproc-per-node``; gloo on the CPU, NCCL on GPUs), in fresh run
directories, and reads the training seconds the loop logged (``metrics.jsonl``: training only, no
start-up, sampling or evaluation). It also checks that the two runs made the same model (largest
weight difference), which is the point of the design (README, "Several processes").

On a CPU the processes share the cores (each gets cores / processes threads), so the ratio there
measures the overhead of the design (every process builds the whole batch's roll-outs; one
all-reduce per step), not a speed-up; on N GPUs it is the data-parallel speed-up.

Usage:
    python benchmarks/processes.py [--spec specs/digits.toml] [--steps 100] [--processes 2] [k=v ...]

Appends to ``benchmarks/results/processes.jsonl`` and prints one markdown table.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent


def train_seconds(spec: str, steps: int, processes: int, overrides: list[str], out: Path) -> tuple[float, Path]:
    args = [sys.executable, "-m", "mstar_cli.main", "run", spec, f"train.steps={steps}", f"train.log_every={steps}",
            f"train.checkpoint_every={steps}", "eval.metrics=[]", "sample.num_samples=8", "sample.batch_size=8",
            "compare={}", f"experiment.output_dir={out}", "--nproc-per-node", str(processes), *overrides]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    run = next(p.parent for p in out.glob("*/metrics.jsonl"))
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return float(last["seconds"]), run


def weights(run: Path, steps: int) -> dict:
    return torch.load(run / "checkpoints" / "train" / f"step-{steps:08d}.pt", weights_only=True)["model"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "specs" / "digits.toml"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one, run_one = train_seconds(args.spec, args.steps, 1, args.overrides, Path(tmp) / "one")
        many, run_many = train_seconds(args.spec, args.steps, args.processes, args.overrides, Path(tmp) / "many")
        a, b = weights(run_one, args.steps), weights(run_many, args.steps)
        diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{platform.machine()} CPU"
    record = {"spec": Path(args.spec).name, "overrides": args.overrides, "steps": args.steps,
              "processes": args.processes, "seconds_one": one, "seconds_many": many,
              "speedup": round(one / many, 3), "max_weight_difference": diff, "device": device,
              "cpus": torch.get_num_threads(), "torch": torch.__version__}
    results = ROOT / "benchmarks" / "results" / "processes.jsonl"
    results.parent.mkdir(exist_ok=True)
    with results.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    print(tabulate([[record["spec"], args.steps, f"{one:.1f}", f"{many:.1f}", f"{one / many:.2f}x", f"{diff:.1e}"]],
                   headers=["spec", "steps", "1 process (s)", f"{args.processes} processes (s)", "speed-up",
                            "max weight difference"], tablefmt="github"))
    print(f"device: {device}; torch {torch.__version__}")


if __name__ == "__main__":
    main()
