"""``mstar bench``'s time estimate of each stage of a plan, from measured throughput."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from mstar_engine.app.bench import bench_table, estimate
from mstar_engine.util.clock import duration
from mstar_engine.plan import compile_plan
from mstar_engine.spec import load_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"
MEASURED = {"train_steps_per_s": 4.0, "sample_s_per_network_eval": 0.5, "sample_s_per_batch": 3.0, "sample_batch": 250}


@pytest.mark.parametrize("seconds, text", [(8.24, "8.2s"), (750, "12m 30s"), (4 * 3600 + 300, "4h 05m"),
                                           (2 * 86400 + 3 * 3600 + 59, "2d 03h"), (math.inf, "?")])
def test_durations_read_like_a_clock(seconds, text):
    assert duration(seconds) == text


def test_estimates_follow_the_plan_and_the_measured_rates():
    plan = compile_plan(load_spec(SPECS / "distill-beta.toml", ["eval.steps=[4, 8]", "eval.repeats=3"]),
                        cuda_count=0)
    spec = plan.spec
    rows = {r["stage"]: r for r in estimate(plan, MEASURED)}
    assert rows["train"]["seconds"] == pytest.approx(spec.train.steps / 4.0)
    batches = spec.sample.num_samples / 250   # a fixed 3 s per batch of 250 plus 0.5 s per evaluation
    assert rows["sample"]["seconds"] == pytest.approx(batches * (3.0 + 0.5 * spec.sample.steps))
    batches = spec.eval.num_samples / 250
    assert rows["eval"]["seconds"] == pytest.approx(3 * batches * ((3.0 + 0.5 * 4) + (3.0 + 0.5 * 8)))
    distill = [r for name, r in rows.items() if name.startswith("distill")]
    assert len(distill) == len(spec.distill.stages) and all(r["seconds"] is None for r in distill)
    assert "compare" not in rows


def test_compare_variants_and_untimed_stages_say_so_in_the_table():
    plan = compile_plan(load_spec(SPECS / "quickstart.toml"), cuda_count=0)
    rows = estimate(plan, MEASURED)
    assert rows[-1]["stage"] == "compare" and rows[-1]["seconds"] is None
    table = bench_table({"spec": "q", "family": "dirichlet", "coupling": "ddpm", "batch_size": 32, "t_per_rollout": 4,
                         "train_examples_per_s": 512.0, "reference_examples_per_s": 1000.0, "ratio": 0.512,
                         "ratio_low": 0.5, "ratio_high": 0.53, "repeats": 5, "input_share": 0.1,
                         "input_seconds_per_step": 0.01, "timed_steps": 32, "warmup_steps": 16,
                         "peak_memory_gib": 0.5, "parameters": 10, "device": "cpu", "threads": 2, **MEASURED,
                         "estimates": rows})
    assert "| estimated train " in table and f"({plan.spec.train.steps} steps at 4.00 steps/s)" in table
    assert "2 variants, each a run of its own: not timed" in table
