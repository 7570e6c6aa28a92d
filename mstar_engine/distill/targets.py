"""Distillation targets (MATH.md §3).

A student evaluated at a grid point t_a uses one prediction for the 2L steps down to t_c = t_a − 2L,
where its teacher evaluates at t_a and at t_b = t_a − L. Both run the same reverse steps
(:func:`segment`, every intermediate state drawn, the tail statistic accumulated: the block rule)
with the same random numbers: the noise of a sample path is shared by teacher and student.

Targets:

- ``teacher``: the teacher's prediction x̂0_b at t_b, made after its first segment and used for its
  second. On the last block (t_c = 0) this is the teacher's output itself. It is the target
  wherever the network reads the tail statistic, which a single-prediction block cannot match.
- ``landing`` (state input, families whose maps act coordinate by coordinate; Salimans & Ho): the
  x̃ whose 2L-step block from x_a lands where the teacher's two segments land. A Gaussian block is
  affine in its prediction, so x̃ = (x_c − B(0)) / (B(1) − B(0)) with B(x) the block's landing
  point from x_a with prediction x, exactly. Other coordinatewise families (Beta, Gamma, von
  Mises) solve B(x̃) = x_c per coordinate by Newton's method from x̂0_b, with the slope of each
  coordinate by a finite difference (the random numbers replayed, so B is one fixed function).
  Families with a chart (``has_chart``: Dirichlet, vMF, Wishart) under the deterministic coupling
  (ρ = 1): with a bijective noise map the noise is carried unchanged through a block, so the
  block lands at B(x̃) = from_noise(to_noise(x_a, x̃, t_a), x̃, t_c), and x̃ solves B(x̃) = x_c by
  Gauss–Newton in the family's chart x̃ = retract(x, v), the Jacobian by finite differences
  (:func:`chart_landing`).
"""
from __future__ import annotations

import math

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

    def block(x0: Tensor) -> Tensor:  # the student's block with the teacher's random numbers
        replay = torch.Generator(device=generator.device).set_state(start)
        return segment(family, x_a, None, x0, t_a, 2 * length, rho, replay)[0]
    if family.affine_in_x0:  # exact
        base = block(torch.zeros_like(x0_b))
        target = (x_c - base) / (block(torch.ones_like(x0_b)) - base)
    elif family.coordinatewise:
        target = _newton_landing(family, block, x_c, x0_b)
    elif family.has_chart and bool((rho.to(t_a.device)[1:] == 1).all()):
        target = chart_landing(family, x_a, t_a, x_c, (t_b - length).clamp(min=1), x0_b)
    else:
        raise ValueError(f"the landing target needs a family whose maps act coordinate by coordinate, or one with "
                         f"a chart under the deterministic coupling; {family.name} with this coupling is neither: "
                         "use the teacher target")
    last = (t_b - length == 0).reshape((-1,) + (1,) * (x0_b.ndim - 1))
    return torch.where(last, x0_b, target)


def _newton_landing(family: Family, block, x_c: Tensor, start: Tensor, iterations: int = 20,
                    delta: float = 1e-4, tol: float = 1e-9) -> Tensor:
    """Solve block(x̃) = x_c per coordinate from x̃ = ``start`` (until every coordinate lands within
    ``tol`` or ``iterations`` are spent); a coordinate whose slope vanishes keeps its value. Each
    iteration costs two blocks."""
    x = family.project(start)
    for _ in range(iterations):
        base = block(x)
        if float(family.difference(x_c, base).abs().max()) < tol:
            break
        bumped = family.project(x + delta)
        step = family.difference(bumped, x)
        step = torch.where(step.abs() < delta / 2, -delta, step)  # at an upper boundary, bump down
        bumped = family.project(x + step)
        slope = family.difference(block(bumped), base) / step
        move = family.difference(x_c, base) / torch.where(slope.abs() > 1e-9, slope, torch.ones_like(slope))
        move = torch.where(slope.abs() > 1e-9, move, torch.zeros_like(move))
        x = family.project(x + move)
    return x


def chart_landing(family: Family, x_a: Tensor, t_a: Tensor, x_c: Tensor, t_c: Tensor, start: Tensor,
                  iterations: int = 16, delta: float = 1e-7, tol: float = 1e-10) -> Tensor:
    """The x̃ whose ρ = 1 block from x_a at t_a lands on x_c at t_c. With a bijective noise map the
    noise is carried unchanged through the block, so it lands at
    B(x̃) = from_noise(to_noise(x_a, x̃, t_a), x̃, t_c): a function that stays continuous where the
    noise coordinates themselves wrap (angles) or change frame. Gauss–Newton on the residual
    B(x̃) − x_c in the chart x̃ = retract(x, v) around the current x (v shaped like the noise, one
    entry per degree of freedom), from ``start``; the Jacobian by forward differences of step
    ``delta``, the step halved until the residual falls. Examples that do not converge keep
    their best point."""
    batch, n = x_a.shape[0], math.prod(family.noise_shape)

    def residual(x: Tensor, rep: int = 1) -> Tensor:
        xa, xc, ta, tc = (z.repeat_interleave(rep, 0) for z in (x_a, x_c, t_a, t_c))
        landed = family.from_noise(family.to_noise(xa, x, ta), x, tc)
        return family.difference(landed, xc).reshape(x.shape[0], -1).double()

    eye = torch.eye(n, dtype=start.dtype, device=start.device).reshape(n, *family.noise_shape)
    x = start
    r = residual(x)
    for _ in range(iterations):
        norm = r.abs().amax(1)
        if bool((norm < tol).all()):
            break
        bumped = family.retract(x.repeat_interleave(n, 0), delta * eye.repeat(batch, *([1] * len(family.noise_shape))))
        jac = ((residual(bumped, n).reshape(batch, n, -1) - r[:, None]) / delta).transpose(1, 2)  # (B, m, n)
        finite = torch.isfinite(jac).all(2).all(1)
        jac = torch.where(finite[:, None, None], jac, 0.0)
        move = torch.linalg.lstsq(jac, -r[..., None], driver="gelsd").solution[..., 0]  # least squares, m ≥ n
        scale = torch.ones(batch, dtype=r.dtype, device=r.device)
        for _ in range(10):  # halve the step where the residual does not fall
            trial = family.retract(x, (scale[:, None] * move).reshape(batch, *family.noise_shape).to(x.dtype))
            r_trial = residual(trial)
            better = finite & torch.isfinite(r_trial).all(1) & (r_trial.abs().amax(1) < norm)
            if bool(better.all()):
                break
            scale = torch.where(better, scale, scale / 2)
        x = torch.where(better.reshape((-1,) + (1,) * (x.ndim - 1)), trial, x)
        r = torch.where(better[:, None], r_trial, r)
    return x


@torch.no_grad()
def target_error(family: Family, teacher: nn.Module, student: nn.Module, s_a: Tensor, x_a: Tensor, t_a: Tensor,
                 length: int, rho: Tensor, kind: str, seed: int, labels: Tensor | None = None) -> float:
    """Mean squared distance between the student's prediction and its target on one batch, with
    the random numbers of ``seed``: how well one student step matches two teacher steps."""
    generator = torch.Generator(device=x_a.device).manual_seed(seed)
    target = distill_targets(family, teacher, s_a, x_a, t_a, length, rho, kind, generator, labels)
    pred = predict(student, s_a, x_a, t_a, labels).to(target.dtype)
    return float((family.difference(pred, target) ** 2).flatten(1).sum(1).mean())
