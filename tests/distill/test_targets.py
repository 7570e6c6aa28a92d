"""Distillation targets against independent oracles (MATH.md §3):

- the Gaussian landing target equals Salimans & Ho's closed form for DDIM (ρ = 1), and with a
  stochastic coupling (ρ < 1, common random numbers) one student block from it lands exactly where
  two teacher blocks land, both written out with the explicit Gaussian kernel formula;
- the teacher target is the x̂0 that the reverse sampler itself computes after the teacher's first
  segment (same random numbers), for a star-shaped and a coupled Dirichlet process;
- one distillation stage lowers the target error of the student.
"""
from __future__ import annotations

import math

import attrs
import pytest
import torch

from mstar_engine.distill.loop import Recipe, Stage, distill_stage, stage_inputs
from mstar_engine.distill.targets import distill_targets, target_error
from mstar_engine.families.dirichlet import Dirichlet
from mstar_engine.families.gaussian import Gaussian
from mstar_engine.app.model import build_process
from mstar_engine.app.model import build_denoiser
from mstar_engine.sampling import sample, step_grid
from mstar_engine.spec import load_spec_text
from mstar_engine.spec.resolve import resolve
from tests.families.fixtures import toy, toy_data


class ToyTeacher(torch.nn.Module):
    """A fixed nonlinear x̂0(s, x, t), different at every step."""

    def forward(self, s, x, t, labels=None):
        tt = t.to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return torch.tanh(0.7 * x + 0.05 * tt) + 0.1 * torch.sin(s.sum(dim=tuple(range(1, s.ndim)), keepdim=True)
                                                              if s is not None else 0.0)


class ToySimplexTeacher(torch.nn.Module):
    """x̂0 on the simplex from both the tail statistic and the state."""

    def forward(self, s, x, t, labels=None):
        tt = t.to(x.dtype)[:, None]
        return torch.softmax(0.3 * s + 2.0 * x + 0.01 * tt, dim=-1)


def _mv(fam: Gaussian, t):
    return fam.mean[t][:, None], fam.var[t][:, None]


def test_landing_target_is_salimans_ho_ddim_target():
    fam, T, L = toy(Gaussian, steps=16), 16, 2          # teacher 8 evaluations, student 4
    g = torch.Generator().manual_seed(0)
    n = 64
    t_a = torch.tensor(step_grid(T, 4)).repeat(n // 4)
    x_a = torch.randn(n, 3, generator=g, dtype=torch.float64) * 1.3
    s_a = torch.zeros_like(x_a)
    teacher = ToyTeacher()
    target = distill_targets(fam, teacher, s_a, x_a, t_a, L, torch.ones(T + 1, dtype=torch.float64), "landing",
                             torch.Generator().manual_seed(1))

    # oracle: DDIM jumps z_u = α_u x̂ + σ_u (z_t − α_t x̂) / σ_t and the Salimans–Ho target
    t_b, t_c = t_a - L, t_a - 2 * L
    (a_a, v_a), (a_b, v_b), (a_c, v_c) = _mv(fam, t_a), _mv(fam, t_b), _mv(fam, t_c)
    s_a_, s_b_, s_c_ = v_a.sqrt(), v_b.sqrt(), v_c.sqrt()
    x0_a = teacher(s_a, x_a, t_a)
    z_b = a_b * x0_a + s_b_ * (x_a - a_a * x0_a) / s_a_
    x0_b = teacher(s_a, z_b, t_b)
    z_c = a_c * x0_b + s_c_ * (z_b - a_b * x0_b) / s_b_
    expected = (z_c - (s_c_ / s_a_) * x_a) / (a_c - (s_c_ / s_a_) * a_a)
    expected = torch.where((t_c == 0)[:, None], x0_b, expected)   # last block: the teacher's output
    torch.testing.assert_close(target, expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(target, x0_b)  # the landing target is not the teacher's prediction


def test_landing_target_lands_where_the_teacher_lands_with_shared_noise():
    """ρ < 1: with the same ε per step, one student block from x̃ lands on the teacher's x_c."""
    fam, T, L = toy(Gaussian, steps=16), 16, 4          # teacher 4 evaluations, student 2: t_a = 16 or 8
    rho = torch.linspace(0.2, 0.9, T + 1, dtype=torch.float64)
    n = 32
    t_a = torch.tensor([16, 8]).repeat(n // 2)
    x_a = torch.randn(n, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    s_a = torch.zeros_like(x_a)
    teacher = ToyTeacher()
    target = distill_targets(fam, teacher, s_a, x_a, t_a, L, rho, "landing", torch.Generator().manual_seed(3))

    def kernel(x, x0, t, eps):  # the Gaussian coupled kernel of MATH.md §2, written out
        (m, v), (m1, v1) = _mv(fam, t), _mv(fam, t - 1)
        r = rho[t][:, None]
        return m1 * x0 + r * (v1 / v).sqrt() * (x - m * x0) + (v1 * (1 - r * r)).sqrt() * eps

    eps = torch.randn(2 * L, n, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = x_a
    x0 = teacher(s_a, x, t_a)
    for i in range(L):
        x = kernel(x, x0, t_a - i, eps[i])
    x0 = teacher(s_a, x, t_a - L)
    for i in range(L, 2 * L):
        x = kernel(x, x0, t_a - i, eps[i])
    teacher_lands = x
    y = x_a
    for i in range(2 * L):
        y = kernel(y, target, t_a - i, eps[i])
    inner = t_a - 2 * L > 0
    torch.testing.assert_close(y[inner], teacher_lands[inner], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rho_value", [0.0, 0.7])
def test_teacher_target_is_the_samplers_second_prediction(rho_value):
    """At t_a = T the target equals the x̂0 that ``sample`` evaluates at T − L, both drawing from
    one generator stream (prior, then the first segment's steps): training targets and the
    sampler run the same block rule."""
    fam, T, L = toy(Dirichlet, steps=16), 16, 2
    rho = torch.full((T + 1,), rho_value, dtype=torch.float64)
    teacher = ToySimplexTeacher()
    n = 50
    seen = {}

    def keep(state):
        if state["t"] == T - L:
            seen["x0_b"] = state["x0_hat"].clone()

    sample(teacher, fam, n, step_grid(T, T // L), rho, generator=torch.Generator().manual_seed(4),
           dtype=torch.float64, callback=keep)
    g = torch.Generator().manual_seed(4)
    x_T = fam.prior_sample(n, g, dtype=torch.float64)
    target = distill_targets(fam, teacher, fam.stat(x_T, T), x_T, torch.full((n,), T), L, rho, "teacher", g)
    torch.testing.assert_close(target, seen["x0_b"], rtol=1e-10, atol=1e-12)


def _process(text: str):
    spec = resolve(load_spec_text(text).spec)
    return spec, build_process(spec.process, (3,) if spec.process.family == "dirichlet" else (2,))


SPECS = {
    "dirichlet-teacher": """
        [experiment]
        name = "d"
        [process]
        family = "dirichlet"
        steps = 16
        [data]
        name = "dirichlet-mixture"
        [network.mlp]
        hidden = 32
        blocks = 1
        [distill]
        to = 8
        """,
    "gaussian-landing": """
        [experiment]
        name = "g"
        [process]
        family = "gaussian"
        steps = 16
        inputs = "state"
        [process.coupling]
        kind = "ddpm"
        [data]
        name = "gaussian-mixture"
        [network.mlp]
        hidden = 32
        blocks = 1
        [distill]
        to = 8
        """,
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_one_stage_lowers_the_target_error(name, tmp_path):
    spec, process = _process(SPECS[name])
    d = attrs.evolve(spec.distill, steps_per_stage=150, lr=3e-3, batch_size=64)
    assert d.target == ("landing" if name == "gaussian-landing" else "teacher")
    torch.manual_seed(0)
    teacher = build_denoiser(spec, process).eval()
    student = build_denoiser(spec, process)
    student.load_state_dict(teacher.state_dict())
    fam, T = process.family, process.family.steps
    rho = torch.ones(T + 1, dtype=torch.float64) if d.coupling == "deterministic" else process.rho()
    x0 = toy_data(fam, 256, torch.Generator().manual_seed(5))
    x_a, s_a, t_a = stage_inputs(process, x0, torch.tensor(step_grid(T, 8)), torch.Generator().manual_seed(6))

    def error() -> float:
        return target_error(fam, teacher, student, s_a, x_a, t_a, 1, rho, d.target, seed=7)

    before = error()
    assert before > 0

    def batches(start):
        while True:
            yield toy_data(fam, 64, torch.Generator().manual_seed(start + 11))

    distill_stage(process, teacher, student, batches, Recipe.of(d), Stage(T, 8, tmp_path / "distill-8", 0), rho,
                  log=lambda _: None)
    after = error()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("family_name", ["beta", "gamma", "von-mises"])
def test_newton_landing_target_lands_where_the_teacher_lands(family_name):
    """ρ = 1: a block with one prediction keeps ξ, so it lands at from_noise(to_noise(x_a, x̃, t_a),
    x̃, t_c) (written out here with the family's maps); the solved x̃ lands on the teacher's x_c."""
    from mstar_engine.families import get
    fam, T, L = toy(get(family_name), steps=16), 16, 2
    rho = torch.ones(T + 1, dtype=torch.float64)
    n = 40
    g = torch.Generator().manual_seed(8)
    x0 = toy_data(fam, n, g)
    t_a = torch.tensor(step_grid(T, 4)).repeat(n // 4)
    x_a = fam.sample(x0, t_a, g)
    s_a = torch.zeros_like(fam.stat(x_a, t_a))

    class Teacher(torch.nn.Module):  # a smooth in-domain prediction, different at every step
        def forward(self, s, x, t, labels=None):
            w = (t.to(x.dtype) / T).reshape((-1,) + (1,) * (x.ndim - 1))
            return fam.project(w * x0 + (1 - w) * fam.project(x))

    teacher = Teacher()
    target = distill_targets(fam, teacher, s_a, x_a, t_a, L, rho, "landing", torch.Generator().manual_seed(9))
    x0_a = teacher(s_a, x_a, t_a)
    # bijective maps (all three families): a ρ = 1 block keeps ξ
    x_b = fam.from_noise(fam.to_noise(x_a, x0_a, t_a), x0_a, t_a - L)
    x0_b = teacher(s_a, x_b, t_a - L)
    x_c = fam.from_noise(fam.to_noise(x_b, x0_b, t_a - L), x0_b, t_a - 2 * L)
    lands = fam.from_noise(fam.to_noise(x_a, target, t_a), target, t_a - 2 * L)
    inner = t_a - 2 * L > 0
    miss = fam.difference(lands, x_c)[inner].abs()
    assert float(miss.max()) < 1e-6, float(miss.max())
    assert float(fam.difference(target, x0_b)[inner].abs().max()) > 1e-3  # it moved away from the teacher's x̂0


def test_circle_differences_wrap_so_targets_across_pi_are_close():
    """On the circle, π − 0.01 and −π + 0.01 are 0.02 apart: the landing solver and the
    distillation loss measure differences with the family's wrapped difference."""
    from mstar_engine.families import get
    fam = toy(get("von-mises"), steps=4)
    a = torch.tensor([[math.pi - 0.01]], dtype=torch.float64)
    b = torch.tensor([[-math.pi + 0.01]], dtype=torch.float64)
    torch.testing.assert_close(fam.difference(a, b), torch.tensor([[-0.02]], dtype=torch.float64))
    torch.testing.assert_close(fam.project(torch.tensor([3 * math.pi / 2], dtype=torch.float64)),
                               torch.tensor([-math.pi / 2], dtype=torch.float64))
    beta = toy(get("beta"), steps=4)
    assert float(beta.project(torch.tensor([1.5], dtype=torch.float64))) < 1.0
