"""Distillation targets (MATH.md §3).

A student evaluated at a grid point t_a uses one prediction for the 2L steps down to t_c = t_a − 2L,
where its teacher evaluates at t_a and at t_b = t_a − L. Both run the same reverse steps
(:func:`segment`, every intermediate state drawn, the tail statistic accumulated: the block rule)
with the same random numbers: the noise of a sample path is shared by teacher and student.

Targets:

- ``teacher``: the teacher's prediction x̂0_b at t_b, made after its first segment and used for its
  second. On the last block (t_c = 0) this is the teacher's output itself. It is the target
  wherever the network reads the tail statistic, which a single-prediction block cannot match.
- ``landing`` (Gaussian, state input; Salimans & Ho): the x̃ whose 2L-step block from x_a lands
  where the teacher's two segments land. A Gaussian block is affine in its prediction, so
  x̃ = (x_c − B(0)) / (B(1) − B(0)) with B(x) the block's landing point from x_a with prediction x.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mstar_engine.families.base import Family
from mstar_engine.process.kernel import coupled_step


def predict(net: nn.Module, s: Tensor, x: Tensor, t: Tensor, labels: Tensor | None) -> Tensor:
    return net(s, x, t, labels) if labels is not None else net(s, x, t)


def segment(family: Family, x: Tensor, s: Tensor | None, x0_hat: Tensor, t: Tensor, length: int, rho: Tensor,
            generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
    """``length`` reverse steps from per-example steps ``t`` with the fixed prediction ``x0_hat``:
    x_{u-1} ~ k_u(· | x_u, x̂0) (an independent draw where ρ_u = 0) and s += A^T T(x_{u-1}) for
    u − 1 ≥ 1 (``s`` None: state only). Returns (x, s) at t − length."""
    for i in range(length):
        u = t - i
        r = rho.to(x.device)[u]
        if bool((r == 0).all()):
            x = family.sample(x0_hat, u - 1, generator)
        else:
            x = coupled_step(family, x, x0_hat, u, r, generator)
        if s is not None:
            inside = (u - 1 >= 1)
            term = family.stat(x, (u - 1).clamp(min=1))
            s = s + term * inside.reshape((-1,) + (1,) * (term.ndim - 1)).to(term.dtype)
    return x, s


@torch.no_grad()
def distill_targets(family: Family, teacher: nn.Module, s_a: Tensor, x_a: Tensor, t_a: Tensor, length: int,
                    rho: Tensor, kind: str, generator: torch.Generator, labels: Tensor | None = None) -> Tensor:
    """The regression target of the student evaluated at ``t_a`` (see the module docstring);
    ``length`` = L teacher steps per teacher segment, ``rho`` the sampling coupling (length T + 1)."""
    if kind not in ("teacher", "landing"):
        raise ValueError(f"unknown distillation target {kind!r}; expected teacher or landing")
    start = generator.get_state()
    x0_a = predict(teacher, s_a, x_a, t_a, labels).to(x_a.dtype)
    x_b, s_b = segment(family, x_a, s_a if kind == "teacher" else None, x0_a, t_a, length, rho, generator)
    t_b = t_a - length
    x0_b = predict(teacher, s_b if s_b is not None else s_a, x_b, t_b, labels).to(x_a.dtype)
    if kind == "teacher":
        return x0_b
    x_c, _ = segment(family, x_b, None, x0_b, t_b, length, rho, generator)
    landing = []
    for value in (0.0, 1.0):  # the student's block with the same random numbers, at x̂0 = 0 and 1
        replay = torch.Generator(device=generator.device).set_state(start)
        landing.append(segment(family, x_a, None, torch.full_like(x0_b, value), t_a, 2 * length, rho, replay)[0])
    slope = landing[1] - landing[0]
    target = (x_c - landing[0]) / slope
    last = (t_b - length == 0).reshape((-1,) + (1,) * (x0_b.ndim - 1))
    return torch.where(last, x0_b, target)


@torch.no_grad()
def target_error(family: Family, teacher: nn.Module, student: nn.Module, s_a: Tensor, x_a: Tensor, t_a: Tensor,
                 length: int, rho: Tensor, kind: str, seed: int, labels: Tensor | None = None) -> float:
    """Mean squared distance between the student's prediction and its target on one batch, with
    the random numbers of ``seed``: how well one student step matches two teacher steps."""
    generator = torch.Generator(device=x_a.device).manual_seed(seed)
    target = distill_targets(family, teacher, s_a, x_a, t_a, length, rho, kind, generator, labels)
    pred = predict(student, s_a, x_a, t_a, labels).to(target.dtype)
    return float(((pred - target) ** 2).flatten(1).sum(1).mean())
