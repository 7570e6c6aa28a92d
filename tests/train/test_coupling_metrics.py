"""The learned coupling's Gaussian diagnostic in metrics.jsonl (MATH.md §2, oracle (c); issue #14).

A Gaussian run with a learned coupling started far from the optimum (ρ_t = 0.5 at every step, not
the ddpm rule) logs ``interaction_rel_error`` = ‖M − M*‖/‖M*‖, M*_t = sqrt(α_t)/β_t, on every log
line; training drives it below 5 %.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from mstar_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def test_learned_gaussian_coupling_logs_and_reaches_the_ddpm_interaction(tmp_path):
    args = ["run", str(ROOT / "specs" / "gaussian.toml"), "process.steps=16", "process.coupling.kind=learned",
            "process.coupling.rho=0.5", "process.coupling.lr=0.02", "train.steps=400", "train.log_every=20",
            "train.warmup_steps=20", "data.num_examples=2000", "network.mlp.hidden=64", "network.mlp.blocks=1",
            "sample.num_samples=20", "eval.num_samples=20", "eval.repeats=1", 'eval.metrics=["energy"]',
            f"experiment.output_dir={tmp_path}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "gaussian" / "metrics.jsonl").read_text().splitlines()]
    errors = [line["interaction_rel_error"] for line in lines if "interaction_rel_error" in line]
    assert len(errors) == 20
    assert errors[0] > 0.05, errors       # it started away from the optimum ...
    assert errors[-1] < 0.05, errors      # ... and reached it

    from mstar_engine import load_run
    run = load_run(tmp_path / "gaussian")
    family, rho = run.model.process.family, run.model.process.rho()
    abar = family.mean ** 2
    alpha = abar[2:] / abar[1:-1]
    m_star = alpha.sqrt() / (1 - alpha)  # sqrt(α_t)/β_t with DDPM marginals (cosine schedule)
    m = rho[2:] / (torch.sqrt(family.var[1:-1] * family.var[2:]) * (1 - rho[2:] ** 2))
    assert float(torch.linalg.vector_norm(m - m_star) / torch.linalg.vector_norm(m_star)) < 0.05
