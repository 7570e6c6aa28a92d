"""``mstar bench``: the two loops take turns, the ratio is a median with its range, and the
profile names the operators of a training step."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mstar_cli.main import cli
from mstar_engine.app import bench as bench_module
from mstar_engine.app.bench import ratio_words
from mstar_engine.app.runner import prepare
from mstar_engine.plan import compile_plan
from mstar_engine.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["network.mlp.hidden=16", "network.mlp.blocks=1", "data.num_examples=500", "process.steps=8", "compare={}",
         "sample.num_samples=16", "sample.batch_size=16"]


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


@pytest.fixture
def small(in_root):
    plan = compile_plan(load_spec("specs/dirichlet.toml", SMALL, ready=True))
    return plan.spec, prepare(plan.spec, log=lambda line: None)


def test_rounds_alternate_the_order_of_the_two_loops(small, monkeypatch):
    order = []
    real_train, real_reference = bench_module.train, bench_module.reference_steps

    def train(*args, **kwargs):
        order.append("mstar")
        return real_train(*args, **kwargs)

    def reference(*args, **kwargs):
        order.append("plain")
        return real_reference(*args, **kwargs)
    monkeypatch.setattr(bench_module, "train", train)
    monkeypatch.setattr(bench_module, "reference_steps", reference)
    result = bench_module.bench(*small, steps=1, repeats=4, sample_steps=2)
    assert order == ["mstar", "plain", "plain", "mstar", "mstar", "plain", "plain", "mstar"]
    assert len(result["ratios"]) == 4 and result["timed_steps"] == 16 and result["warmup_steps"] == 16


@pytest.mark.parametrize("low, high, undecided", [(0.95, 1.08, True), (1.01, 1.05, False), (0.90, 0.99, False),
                                                  (1.0, 1.2, True)])
def test_a_spread_wider_than_the_difference_is_said(low, high, undecided):
    words = ratio_words({"ratio": (low + high) / 2, "ratio_low": low, "ratio_high": high, "repeats": 5})
    assert f"range {low:.3f}-{high:.3f}" in words and "median of 5 rounds" in words
    assert ("not distinguishable" in words) == undecided


def test_profile_prints_the_costliest_operators(in_root):
    result = CliRunner().invoke(cli, ["bench", "specs/dirichlet.toml", *SMALL, "--profile", "3"])
    assert result.exit_code == 0, result.output
    assert "3 training steps of" in result.output and "Self CPU" in result.output
    assert "aten::" in result.output and "Self CPU time total" in result.output
