"""Reverse sampler: the step grid, the number of network evaluations, and the block rule (every
intermediate x_s is drawn and added to s, so s_t keeps its forward law with K < T evaluations)."""
import pytest
import torch
from scipy import stats

from mstar_engine.families.dirichlet import Dirichlet
from mstar_engine.process.forward import rollout
from mstar_engine.sampling import sample, step_grid
from tests.families.fixtures import toy


@pytest.mark.parametrize("steps,k,expected", [(8, 8, [8, 7, 6, 5, 4, 3, 2, 1]), (8, 4, [8, 6, 4, 2]),
                                              (8, 1, [8]), (10, 3, [10, 7, 3])])
def test_step_grid(steps, k, expected):
    assert step_grid(steps, k) == expected


def test_step_grid_rejects_bad_counts():
    with pytest.raises(ValueError, match="1..8"):
        step_grid(8, 9)


@pytest.mark.parametrize("evaluations", [16, 4, 1])
@pytest.mark.parametrize("rho", [0.0, 0.7])
def test_block_rule_evaluates_the_grid_only(evaluations, rho):
    fam = toy(Dirichlet, steps=16)
    calls = []

    def denoiser(s, x, t):
        calls.append(int(t[0]))
        return torch.full((x.shape[0], 3), 1 / 3, dtype=torch.float64)

    out = sample(denoiser, fam, 8, step_grid(16, evaluations), torch.full((17,), rho, dtype=torch.float64),
                 generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert calls == step_grid(16, evaluations)
    assert out.shape == (8, 3)


@pytest.mark.parametrize("evaluations", [16, 4, 1])
def test_block_rule_keeps_the_forward_law_of_the_tail(evaluations):
    """Star-shaped sampler, perfect denoiser on one-point data (x̂0 = x0): the tail accumulated
    below step T, s_1 − s_T = Σ_{s<T} A_s T(x_s), has its forward law whatever the number of
    evaluations; a sampler that skipped the intermediate draws would change it."""
    fam = toy(Dirichlet, steps=16)
    n = 3000
    x0 = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    seen = {}

    def denoiser(s, x, t):
        seen.setdefault("s_T", s.clone())           # the first call is at t = T: s_T = A_T T(x_T)
        return x0.expand(x.shape[0], 3)

    def keep(state):
        if state["t"] == 2:
            seen["s_1"] = state["s"].clone()

    out = sample(denoiser, fam, n, step_grid(16, evaluations), generator=torch.Generator().manual_seed(0),
                 dtype=torch.float64, callback=keep)
    assert torch.equal(out, x0.expand(n, 3))
    forward = rollout(fam, x0.expand(n, 3), torch.stack([torch.ones(n, dtype=torch.long),
                                                         torch.full((n,), 16)], 1),
                      generator=torch.Generator().manual_seed(1)).s
    below_t_forward = forward[:, 0] - forward[:, 1]
    below_t_sampler = seen["s_1"] - seen["s_T"]
    for j in range(3):
        assert stats.ks_2samp(below_t_sampler[:, j].numpy(), below_t_forward[:, j].numpy(),
                              method="asymp").pvalue > 1e-3
