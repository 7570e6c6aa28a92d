"""Coupling schedules ρ_t (MATH.md §2)."""
import math

import numpy as np
import pytest
import torch

from mstar_engine.schedules import COUPLINGS, SCHEDULES, LearnedCoupling, build_coupling, gaussian_equivalent_snr
from mstar_engine.schedules.coupling import gaussian_interaction


def test_registry_names():
    assert set(COUPLINGS) == {"independent", "deterministic", "constant", "ddpm", "learned"}


def test_fixed_rules():
    for kind, value in (("independent", 0.0), ("deterministic", 1.0)):
        rho = build_coupling(kind, 10)
        assert rho.dtype == torch.float64 and rho.shape == (11,)
        assert rho[0] == 0 and torch.all(rho[1:] == value)
    rho = build_coupling("constant", 10, rho=0.3)
    assert rho[0] == 0 and torch.allclose(rho[1:], torch.full((10,), 0.3, dtype=torch.float64))


@pytest.mark.parametrize("bad", [None, -0.1, 1.5, float("nan")])
def test_constant_needs_rho_in_unit_interval(bad):
    with pytest.raises(ValueError, match="rho in"):
        build_coupling("constant", 5, rho=bad)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_ddpm_rule_with_ddpm_marginals_gives_interaction_sqrt_alpha_over_beta(name):
    """ρ*_t = sqrt(SNR_t/SNR_{t−1}) ⇒ M_t = ρ/(sqrt(v_{t−1}v_t)(1 − ρ²)) = sqrt(α_t)/β_t,
    α_t = ᾱ_t/ᾱ_{t−1}, β_t = 1 − α_t, at every t = 1..T (t = 1 uses the pseudo step ᾱ_0)."""
    steps = 1000
    sched = SCHEDULES[name].build(steps)
    rho = build_coupling("ddpm", steps, snr=gaussian_equivalent_snr(name, steps))
    abar = sched["mean"].numpy() ** 2
    alpha = abar[1:] / abar[:-1]
    expected = np.sqrt(alpha) / (1 - alpha)
    got = gaussian_interaction(rho, sched["var"]).numpy()[1:]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_ddpm_rule_clips_and_handles_an_infinite_pseudo_step():
    snr = torch.tensor([math.inf, 4.0, 1.0, 2.0], dtype=torch.float64)
    rho = build_coupling("ddpm", 3, snr=snr)
    np.testing.assert_allclose(rho.numpy(), [0.0, 0.0, 0.5, 1.0])
    rho = build_coupling("ddpm", 1000, snr=gaussian_equivalent_snr("ss-linear", 1000))
    assert rho[-1] == 1.0 and torch.all((rho >= 0) & (rho <= 1))


def test_ddpm_rule_errors():
    with pytest.raises(ValueError, match="needs the Gaussian-equivalent SNR"):
        build_coupling("ddpm", 4)
    with pytest.raises(ValueError, match="length T"):
        build_coupling("ddpm", 4, snr=torch.ones(4))
    with pytest.raises(ValueError, match="> 0"):
        build_coupling("ddpm", 2, snr=torch.tensor([2.0, 1.0, 0.0]))
    with pytest.raises(KeyError, match="unknown coupling"):
        build_coupling("sticky", 4)


def test_learned_starts_at_the_ddpm_rule_and_trains():
    snr = gaussian_equivalent_snr("cosine", 50)
    module = build_coupling("learned", 50, snr=snr)
    assert isinstance(module, LearnedCoupling) and module.steps == 50
    assert sum(p.numel() for p in module.parameters()) == 51
    target = build_coupling("ddpm", 50, snr=snr).clamp(1e-4, 1 - 1e-4)
    target[0] = 0
    torch.testing.assert_close(module(), target, rtol=1e-9, atol=1e-12)
    loss = (module()[1:] - 0.25).pow(2).sum()
    loss.backward()
    assert module.logit.grad is not None and module.logit.grad[0] == 0 and module.logit.grad[1:].abs().sum() > 0


def test_learned_without_snr_starts_at_one_half():
    rho = build_coupling("learned", 7)()
    assert rho[0] == 0 and torch.allclose(rho[1:], torch.full((7,), 0.5, dtype=torch.float64))
