"""``mstar bench``: the two loops take turns block by block, the ratio is a median with its range, and the
profile names the operators of a training step."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
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


def test_the_two_loops_take_turns_block_by_block(small, monkeypatch):
    """After each block of 16 real steps, 16 plain steps; the first pair untimed; the rounds'
    times and ratios are sums over their own blocks."""
    calls = []
    real_run, real_call = bench_module.PlainLoop.run, bench_module._TakeTurns.__call__

    def run(self, steps):
        calls.append(("plain", steps))
        return real_run(self, steps)

    def hook(self, step, ema):
        calls.append(("mstar", step))
        return real_call(self, step, ema)
    monkeypatch.setattr(bench_module.PlainLoop, "run", run)
    monkeypatch.setattr(bench_module._TakeTurns, "__call__", hook)
    result = bench_module.bench(*small, steps=17, repeats=2, sample_steps=2)  # 17 steps: 2 blocks per round
    assert calls == [c for step in (16, 32, 48, 64, 80) for c in (("mstar", step), ("plain", 16))]
    assert result["timed_steps"] == 32 and result["warmup_steps"] == 16 and len(result["ratios"]) == 2
    ours, plain = result["block_seconds"], result["reference_block_seconds"]
    assert len(ours) == len(plain) == 4
    assert result["step_seconds"] == pytest.approx([sum(ours[:2]) / 32, sum(ours[2:]) / 32])
    assert result["ratios"] == pytest.approx([sum(plain[:2]) / sum(ours[:2]), sum(plain[2:]) / sum(ours[2:])])


def test_plain_loop_carries_its_state_between_calls(small):
    """Its optimiser moves the weights and its random stream goes on from one call to the next."""
    spec, prepared = small
    net = bench_module._reference_backbone(spec, prepared, prepared.process.family.event_shape)
    loop = bench_module.PlainLoop(net, bench_module._reference_batches(prepared.source, 1, torch.device("cpu")))
    before = [p.detach().clone() for p in net.parameters()]
    assert loop.run(2) > 0
    state = loop.generator.get_state()
    loop.run(1)
    assert not torch.equal(state, loop.generator.get_state())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.parametrize("low, high, undecided", [(0.95, 1.08, True), (1.01, 1.05, False), (0.90, 0.99, False),
                                                  (1.0, 1.2, True)])
def test_a_spread_wider_than_the_difference_is_said(low, high, undecided):
    words = ratio_words({"ratio": (low + high) / 2, "ratio_low": low, "ratio_high": high, "repeats": 5})
    assert f"range {low:.3f}-{high:.3f}" in words and "median of 5 rounds" in words
    assert ("not distinguishable" in words) == undecided


def test_each_rounds_ratio_is_listed_in_order():
    words = ratio_words({"ratio": 1.04, "ratio_low": 0.987, "ratio_high": 1.127, "repeats": 3,
                         "ratios": [1.127, 0.987, 1.04]})
    assert "median of 3 rounds: 1.127, 0.987, 1.040; range 0.987-1.127" in words


def test_profile_prints_the_costliest_operators(in_root):
    result = CliRunner().invoke(cli, ["bench", "specs/dirichlet.toml", *SMALL, "--profile", "3"])
    assert result.exit_code == 0, result.output
    assert "3 training steps of" in result.output and "Self CPU" in result.output
    assert "aten::" in result.output and "Self CPU time total" in result.output
