"""``sample.coupling``: the reverse chain of a trained run with its own ρ_t or with ρ = 1.

One tiny Dirichlet run per module (state input, ddpm coupling, T = 16, 10 optimiser steps).
"""
from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch

from mstar_engine.app.runner import execute
from mstar_engine.app.runs import load_run
from mstar_engine.plan import compile_plan
from mstar_engine.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "specs" / "quickstart.toml"
TINY = ["train.steps=10", "train.log_every=10", "train.checkpoint_every=10", "sample.num_samples=8",
        "eval.metrics=[]", "process.steps=16", "compare={}", "data.num_examples=500", "network.mlp.hidden=16",
        "network.mlp.blocks=1", "process.inputs=state"]


def issues_of(*overrides: str) -> list:
    return [i for i in load_spec(QUICKSTART, list(overrides)).warnings if i.path[:2] == ("sample", "coupling")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    loaded = load_spec(QUICKSTART, [*TINY, f"experiment.output_dir={out}", "sample.coupling=deterministic"],
                       ready=True)
    plan = compile_plan(loaded)
    execute(plan, loaded, log=lambda _: None)
    return plan.run_dir


def test_deterministic_sampling_uses_rho_one_and_model_uses_the_trained_coupling(run_dir):
    run = load_run(run_dir)
    assert run.spec.sample.coupling == "deterministic"
    assert torch.equal(run.model.sampling_rho(), torch.ones(17, dtype=torch.float64))
    own = attrs.evolve(run.model, rho=None)
    assert not torch.equal(own.sampling_rho(), run.model.sampling_rho())  # the ddpm rule is below 1
    # the run's samples are the ρ = 1 chain's, not the trained coupling's
    det, mine = run.model.sample(64, seed=3), own.sample(64, seed=3)
    assert not torch.allclose(det, mine)


def test_rho_one_chain_is_a_function_of_the_starting_noise(run_dir):
    """With ρ = 1 the fresh noise of every step is multiplied by sqrt(1 − ρ²) = 0: two chains from
    the same x_T with different step noise end at the same sample."""
    from mstar_engine.sampling.samplers import sample, step_grid

    model = load_run(run_dir).model
    family = model.process.family
    x_T = family.prior_sample(16, torch.Generator().manual_seed(0), dtype=torch.float64)
    outs = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        calls = iter([x_T])
        original = family.prior_sample
        family.prior_sample = lambda *a, **k: next(calls)  # the same starting noise, other step noise
        try:
            outs.append(sample(model.denoiser, family, 16, step_grid(16, 16), model.sampling_rho(), generator=g,
                               dtype=torch.float64))
        finally:
            family.prior_sample = original
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-12)


def test_deterministic_sampling_of_a_tail_reading_model_is_warned():
    warned = issues_of("sample.coupling=deterministic")  # quickstart: inputs auto = tail+state, ddpm
    assert [i.severity for i in warned] == ["warning"]
    assert "tail statistic" in warned[0].message
    assert issues_of("sample.coupling=deterministic", "process.inputs=state") == []
    assert issues_of("sample.coupling=model") == []


def test_unknown_sample_coupling_is_an_error():
    from mstar_engine.spec import SpecError

    with pytest.raises(SpecError, match="deterministic"):
        load_spec(QUICKSTART, ["sample.coupling=ddim"])
