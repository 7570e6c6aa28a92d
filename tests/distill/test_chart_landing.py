"""The landing target of families with a chart (Dirichlet, vMF, Wishart; MATH.md §3, issue #14).

Oracle: choose the answer x̃* first, let the ρ = 1 block with prediction x̃* run step by step
through the coupled kernel (``segment``, 2L steps) to get x_c, then ask ``chart_landing`` to find
the prediction from a perturbed start: it must land on x_c (and, the map being injective here,
return x̃*).
"""
from __future__ import annotations

import pytest
import torch

from mstar_engine.distill.targets import chart_landing, segment
from mstar_engine.families import REGISTRY
from tests.families.fixtures import toy, toy_data

CHARTED = sorted(name for name, cls in REGISTRY.items() if cls.has_chart)


def test_the_charted_families():
    assert {"dirichlet", "vmf", "wishart"} <= set(CHARTED)


@pytest.mark.parametrize("name", CHARTED)
def test_chart_is_a_local_parameterisation(name):
    fam = toy(name, steps=16)
    g = torch.Generator().manual_seed(0)
    x = toy_data(fam, 16, g)
    zero = torch.zeros((16, *fam.noise_shape), dtype=x.dtype)
    torch.testing.assert_close(fam.retract(x, zero), x, rtol=0, atol=1e-12)
    moved = fam.retract(x, 0.3 * torch.randn(zero.shape, generator=g, dtype=x.dtype))
    fam.check_domain(moved, "retracted points")
    assert not torch.allclose(moved, x)


@pytest.mark.parametrize("name", CHARTED)
def test_chart_landing_lands_where_the_block_lands(name):
    fam = toy(name, steps=16)
    g = torch.Generator().manual_seed(1)
    n, length = 32, 2
    answer = toy_data(fam, n, g)
    t_a = torch.full((n,), 9)
    x_a = fam.sample(answer, t_a, g)  # a state the answer could have produced
    rho = torch.ones(fam.steps + 1, dtype=torch.float64)
    x_c, _ = segment(fam, x_a, None, answer, t_a, 2 * length, rho, g)  # step by step, ρ = 1
    start = fam.retract(answer, 0.2 * torch.randn((n, *fam.noise_shape), generator=g, dtype=answer.dtype))
    found = chart_landing(fam, x_a, t_a, x_c, t_a - 2 * length, start)
    landed, _ = segment(fam, x_a, None, found, t_a, 2 * length, rho, g)
    torch.testing.assert_close(landed, x_c, rtol=0, atol=1e-8)
    torch.testing.assert_close(found, answer, rtol=0, atol=1e-6)
    assert not torch.allclose(start, answer, atol=1e-3)  # it had something to do
