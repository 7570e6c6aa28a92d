"""The Gaussian family's closed-form (x_t, s_t) draw (``Gaussian.exact_tail``, used by ``rollout``
for one kept step) against simulating the chain from T down to t (the K = 2 path of ``rollout``
simulates it): same means, variances and covariance within 5 standard errors, and a two-sample
KS test on s_t (p > 1e-3, fixed seeds), for the star-shaped, a coupled and the deterministic
chain."""
from __future__ import annotations

import pytest
import torch
from scipy import stats

from mstar_engine.families.gaussian import Gaussian
from mstar_engine.process.forward import rollout
from tests.families.fixtures import toy

N = 60_000


@pytest.mark.parametrize("rho_kind", ["star", "coupled", "deterministic"])
@pytest.mark.parametrize("t", [1, 7, 20])
def test_exact_tail_has_the_simulated_law(rho_kind, t):
    fam = toy(Gaussian, steps=20)
    rho = {"star": None, "coupled": torch.linspace(0.3, 0.95, 21, dtype=torch.float64),
           "deterministic": torch.ones(21, dtype=torch.float64)}[rho_kind]
    x0 = torch.tensor([0.7, -1.2, 0.0], dtype=torch.float64).expand(N, 3).contiguous()
    keep = torch.full((N, 1), t)
    exact = rollout(fam, x0, keep, rho, torch.Generator().manual_seed(1))
    simulated = rollout(fam, x0, keep.expand(N, 2), rho, torch.Generator().manual_seed(2))
    a = torch.cat([exact.x[:, 0], exact.s[:, 0]], 1)          # (N, 6): x_t and s_t coordinates
    b = torch.cat([simulated.x[:, 0], simulated.s[:, 0]], 1)
    se = (a.var(0) / N).sqrt() * 2 ** 0.5
    assert bool(((a.mean(0) - b.mean(0)).abs() <= 5 * se + 1e-12).all())
    var_se = a.var(0) * (2 / (N - 1)) ** 0.5 * 2 ** 0.5
    assert bool(((a.var(0) - b.var(0)).abs() <= 5 * var_se + 1e-12).all())
    cov_a = torch.cov(torch.stack([a[:, 0], a[:, 3]]))[0, 1]
    cov_b = torch.cov(torch.stack([b[:, 0], b[:, 3]]))[0, 1]
    scale = (a[:, 0].var() * a[:, 3].var()).sqrt()
    assert abs(float(cov_a - cov_b)) <= 5 * float(scale) * (2 / N) ** 0.5 + 1e-12
    assert stats.ks_2samp(a[:, 4].numpy(), b[:, 4].numpy()).pvalue > 1e-3


def test_exact_tail_moments_are_cached_per_coupling():
    fam = toy(Gaussian, steps=20)
    rho = torch.full((21,), 0.5, dtype=torch.float64)
    first = fam.tail_moments(rho)
    assert fam.tail_moments(rho.clone()) is first
    assert fam.tail_moments(None) is not first
