"""ρ = 1 is a pathwise-deterministic sampler for every continuous family (MATH.md §2, issue #14).

With a bijective noise map, the coupled kernel at ρ = 1 is x_{t-1} = from_noise(to_noise(x_t, x̂0, t),
x̂0, t − 1): given the noise at T (the prior draw x_T) and the network, the whole chain is a
function, so the sampler's random generator must not matter. The categorical family is discrete:
no deterministic kernel maps q_t onto q_{t-1}, so its ρ = 1 chain is deterministic only with
common random numbers (the same generator), which is what its distillation uses.
"""
from __future__ import annotations

import pytest
import torch

from mstar_engine.families import REGISTRY
from mstar_engine.sampling.samplers import reverse_step, step_grid
from tests.families.fixtures import toy, toy_data

CONTINUOUS = sorted(name for name in REGISTRY if name != "categorical")


def _chain(fam, x_T, data, rho, seed, evaluations):
    """A reverse chain from x_T with a deterministic stand-in network: x̂0 alternates between a
    fixed data batch and the current state (a function of the path), on the sampler's grid."""
    g = torch.Generator().manual_seed(seed)
    x, x0_hat = x_T, None
    grid = set(step_grid(fam.steps, evaluations))
    path = [x]
    for t in range(fam.steps, 0, -1):
        if t in grid:
            x0_hat = data if t % 2 == 0 else fam.project(x)
        x = reverse_step(fam, x, x0_hat, t, rho, g)
        path.append(x)
    return torch.stack(path)


@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize("evaluations", [8, 2])
def test_rho_one_chain_is_a_function_of_the_starting_noise(name, evaluations):
    fam = toy(name, steps=8)
    g = torch.Generator().manual_seed(0)
    data = toy_data(fam, 64, g)
    x_T = fam.prior_sample(64, g, dtype=data.dtype)
    a = _chain(fam, x_T, data, 1.0, seed=1, evaluations=evaluations)
    b = _chain(fam, x_T, data, 1.0, seed=2, evaluations=evaluations)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the test can fail: below ρ = 1 the fresh noise of the kernel changes the path
    c = _chain(fam, x_T, data, 0.9, seed=1, evaluations=evaluations)
    d = _chain(fam, x_T, data, 0.9, seed=2, evaluations=evaluations)
    assert not torch.equal(c, d)


def test_categorical_rho_one_is_deterministic_with_common_random_numbers_only():
    fam = toy("categorical", steps=8)
    g = torch.Generator().manual_seed(0)
    data = toy_data(fam, 256, g)
    x_T = fam.prior_sample(256, g, dtype=data.dtype)
    torch.testing.assert_close(_chain(fam, x_T, data, 1.0, 1, 8), _chain(fam, x_T, data, 1.0, 1, 8), rtol=0, atol=0)
    assert not torch.equal(_chain(fam, x_T, data, 1.0, 1, 8), _chain(fam, x_T, data, 1.0, 2, 8))
