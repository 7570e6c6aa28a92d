"""Trained small models against the kinds' closed forms (issue #15): a flow-matching network
trained on Gaussian data approaches the optimal velocity of :func:`gaussian_velocity`, and an
energy-score denoiser trained on Gaussian data samples it in a few steps. Each uses the kind's own
draw and loss (what the training loop calls), with an Adam loop of a few hundred steps."""
from __future__ import annotations

import types

import pytest
import torch

from mstar_engine.kinds.energy import EnergyScore
from mstar_engine.kinds.flow import FlowMatching
from mstar_engine.kinds.flow_paths import gaussian_velocity
from mstar_engine.networks.field import build_field

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: threads only add contention on a busy machine
    yield
    torch.set_num_threads(before)


def _network(noise_input: bool, hidden: int = 64):
    cfg = types.SimpleNamespace(kind="mlp", dropout=0.0, mlp=types.SimpleNamespace(hidden=hidden, blocks=2, time_dim=16))
    torch.manual_seed(0)
    return build_field((2,), cfg, noise_input=noise_input).double()


def _data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return MEAN + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(COV).T


def _train(kind, net, steps: int, lr: float = 3e-3, batch: int = 256) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        x0 = _data(batch, 100 + step)
        drawn = [d.flatten(0, 1) for d in kind.draw(x0, 1, None, g, g)]
        _, loss = kind.training_loss(lambda *a, labels=None: net(*a), x0, tuple(drawn), None, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()


def _velocity_error(net) -> float:
    """E‖v_θ − v*‖² over t ~ U(0, 1) and x_t of the Gaussian path, relative to E‖v*‖²."""
    g = torch.Generator().manual_seed(7)
    x0, eps = _data(4000, 5), torch.randn(4000, 2, generator=g, dtype=torch.float64)
    t = torch.rand(4000, generator=g, dtype=torch.float64)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * eps
    exact = gaussian_velocity(MEAN, COV)(x_t, t)
    with torch.no_grad():
        return float((net(x_t, t) - exact).pow(2).sum(1).mean() / exact.pow(2).sum(1).mean())


def test_a_trained_flow_network_approaches_the_optimal_gaussian_velocity():
    kind = FlowMatching(types.SimpleNamespace(event_shape=(2,), steps=64))
    net = _network(False)
    before = _velocity_error(net)
    _train(kind, net, 600)
    after = _velocity_error(net)
    # measured ~0.005 (from ~1): the velocity regression is noisy (its irreducible loss is large),
    # so 600 steps reach a few per cent of E‖v*‖², far below the untrained network
    assert after < 0.05 and after < before / 20, (before, after)
    # and its ODE samples have the data's moments (8 Heun evaluations)
    kind.solver = "heun"
    with torch.no_grad():
        x = kind.sample_batch(lambda x, t: net(x, t), 20_000, 8, None, torch.Generator().manual_seed(3), "cpu", "x0")
    # measured: mean off by 0.07, covariance by 0.02 (600 steps of a 64-wide MLP)
    assert torch.allclose(x.mean(0), MEAN, atol=0.12)
    assert torch.allclose(torch.cov(x.T), COV, atol=0.08)


def _moment_error(x: torch.Tensor) -> float:
    return float((x.mean(0) - MEAN).norm() + (torch.cov(x.T) - COV).norm())


def test_a_trained_energy_score_denoiser_samples_the_gaussian_in_few_steps():
    """600 steps take the 1- and 4-step samples' moment error from ~1.4 (untrained) to ~0.2: the
    model learns p(x0 | x_t) as a distribution, not its mean (a mean predictor's 1-step sample is a
    point). Measured 1-step covariance 0.35 vs 0.5: still under-dispersed at this budget."""
    kind = EnergyScore(types.SimpleNamespace(event_shape=(2,), steps=64), beta=1.0, draws=8)
    net = _network(True)

    def errors() -> list[float]:
        with torch.no_grad():
            return [_moment_error(kind.sample_batch(lambda x, t, xi: net(x, t, xi), 20_000, steps, None,
                                                    torch.Generator().manual_seed(3), "cpu", "x0")) for steps in (1, 4)]
    before = errors()
    _train(kind, net, 600)
    after = errors()
    assert all(a < 0.35 and a < b / 4 for a, b in zip(after, before)), (before, after)
