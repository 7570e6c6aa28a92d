"""Consistency distillation (Song et al. 2023, "Consistency Models", Algorithm 2, CD) from a teacher
whose sampler is deterministic: the exponential-family process sampled with ρ = 1.

The teacher's ODE. With ρ = 1 the coupled kernel carries the noise unchanged,
x_{u-1} = from_noise(to_noise(x_u, x̂0, u), x̂0, u − 1), so the reverse chain is a function of its
start (for the Gaussian family with DDPM marginals: DDIM). On the grid 0 = g_0 < g_1 < … < g_N = T
(:func:`consistency_grid`, the teacher's N sampling intervals) the teacher makes one prediction
x̂0 = D_φ(x_{g_n}, g_n) per interval and holds it over the steps g_n → g_{n−1} (the block rule of
:mod:`mstar_engine.sampling.samplers`): :func:`teacher_step`. Composing these blocks down to 0
defines the teacher's solution map F(x, g_n); it is consistent by construction,
F(x, g_n) = F(teacher_step(x, g_n → g_{n−1}), g_{n−1}), and F(x, 0) = x.

The student. f_θ(x_t, t) approximates F with one network call. The boundary condition f(x, 0) = x
holds exactly, by construction, for every family (step 0 returns the state, no network call). For
families whose states are affine in x0 (``affine_in_x0``: x_t = m_t x0 + sqrt(v_t) ξ) the
parametrisation of Song et al. / Karras et al. is used in the variance-exploding coordinates
x_t / m_t = x0 + σ_t ξ, σ_t = sqrt(v_t) / m_t, on the network's raw output F:

    f_θ(x_t, t) = c_skip(t) x_t / m_t + c_out(t) F_θ(x_t, t),
    c_skip = σ_d² / ((σ_t − σ_min)² + σ_d²),  c_out = (σ_t − σ_min) σ_d / sqrt(σ_d² + σ_t²),

with σ_min = σ_0 (the pseudo step's) and σ_d = ``sigma_data``, so c_skip(0) = 1, c_out(0) = 0.
Our networks predict x0 itself; read as Karras et al.'s preconditioned denoiser
D_θ = e_skip x/m + e_out F_θ (e_skip, e_out: the same coefficients with σ_min = 0), the raw
output is F_θ = (D_θ − e_skip x/m) / e_out, and the student starts as its teacher (D_θ is
initialised from the teacher's weights, as Song et al. initialise F from the teacher's F). So

    f_θ = (c_skip − c_out e_skip / e_out) x_t / m_t + (c_out / e_out) D_θ,

which is D_θ itself where σ_min = 0 (DDPM marginals end at the data: v_0 = 0). Applying c_skip and
c_out to D_θ directly instead would start the student at c_out(T) x̂0 ≈ σ_d x̂0, far from its
teacher, and measured 5× worse at its 8 evaluations. Other families (states in the data domain,
not affine in x0) use f = D_θ for t ≥ 1, in the domain.

The loss (one batch): n ~ U{1..N} per example, x_{g_n} ~ q_{g_n}(· | x0), x' = teacher_step(x_{g_n},
g_n → g_{n−1}), target = f_{θ⁻}(x', g_{n−1}) (= x' where g_{n−1} = 0), and
L = mean_b λ_n mean_coords difference(f_θ(x_{g_n}, g_n), target)²; θ⁻ ← μ θ⁻ + (1 − μ) θ after
each optimiser step (μ = ``ema_target``). λ_n = 1 by default; :func:`interval_weights` gives Song &
Dhariwal's 1/(σ_{g_n} − σ_{g_{n−1}}) and its square root. With the teacher's exact solution map in place of f_θ and
f_θ⁻ the loss is exactly 0: F is the fixed point the student regresses to.

Multistep consistency sampling needs no sampler of its own. ``sample(f, family, n,
step_grid(T, K), rho=zeros)`` evaluates f at the K grid steps and, between two grid points, draws
x_{t−1} ~ q_{t−1}(· | x̂0) independently (ρ = 0), so the state met at the next grid point τ is a
fresh draw of q_τ(· | x̂0) — Song et al.'s multistep sampler (x̂ = f(x_T, T); x_τ ~ q_τ(· | x̂);
x̂ = f(x_τ, τ); …), in the family's own forward marginals. Hence the checkpoint's
``sampling_rho`` of zeros.

:func:`consistency_stage` is one resumable stage (:class:`~mstar_engine.train.stage.ResumableStage`)
modelled on :func:`~mstar_engine.distill.loop.distill_stage`: linear lr decay to 0, Adam, the batch
stream by example position, every draw a pure function of (seed, step), the target network θ⁻
stored in each checkpoint, so a resumed stage continues bit for bit. A process of a
multi-process run draws the whole batch's steps and states (the same generator everywhere) and
keeps its shard; the gradients are summed over the processes.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from mstar_engine.data.stream import Stream
from mstar_engine.distill.loop import Seconds, linear_step, open_stage, weights_digest
from mstar_engine.distill.targets import predict
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.families.base import Family, as_steps
from mstar_engine.process.kernel import coupled_step
from mstar_engine.sampling import step_grid
from mstar_engine.train.stage import ResumableStage
from mstar_engine.util.devices import generator as make_generator

_TAG = 0xC0DE  # decorrelates this stage's random streams from the progressive-distillation stages'


def consistency_grid(T: int, N: int) -> list[int]:
    """The ascending grid [0, g_1, …, g_N = T]: the N teacher intervals of ``step_grid(T, N)``."""
    return [0, *sorted(step_grid(T, N))]


@torch.no_grad()
def teacher_step(family: Family, teacher: Callable, x: Tensor, t_from: Tensor | int, t_to: Tensor | int,
                 labels: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
    """The teacher's ρ = 1 chain from step ``t_from`` down to ``t_to`` (per example, t_to < t_from,
    t_to may be 0) with its prediction x̂0 = teacher(None, x, t_from) held over the block.
    Deterministic for every continuous family (the fresh noise is multiplied by 0); ``generator``
    feeds only the auxiliary draws of a family whose inverse noise map makes some (a fixed seed by
    default: common random numbers, no use of the global generator)."""
    batch = x.shape[0]
    t_from, t_to = as_steps(t_from, batch, x.device), as_steps(t_to, batch, x.device)
    if bool((t_to >= t_from).any()) or bool((t_to < 0).any()) or bool((t_from > family.steps).any()):
        raise ValueError("teacher_step needs 0 <= t_to < t_from <= T for every example")
    x0_hat = predict(teacher, None, x, t_from, labels).to(x.dtype)
    g = generator if generator is not None else torch.Generator(device=x.device).manual_seed(0)
    keys = t_from * (family.steps + 1) + t_to
    pairs = keys.unique().tolist()  # one group of examples per (t_from, t_to)
    out = x if len(pairs) == 1 else x.clone()
    for key in pairs:
        a, b = divmod(key, family.steps + 1)
        rows = None if len(pairs) == 1 else (keys == key).nonzero().squeeze(1)
        y, x0 = (x, x0_hat) if rows is None else (x[rows], x0_hat[rows])
        for u in range(a, b, -1):
            y = coupled_step(family, y, x0, u, 1.0, g)
        if rows is None:
            return y.to(x.dtype)
        out[rows] = y.to(out.dtype)
    return out


def boundary_coefficients(family: Family, sigma_data: float = 0.5) -> tuple[Tensor, Tensor]:
    """(c_skip, c_out), float64 tensors of length T + 1 (see the module docstring); c_skip(0) = 1,
    c_out(0) = 0 for every family."""
    T = family.steps
    if family.affine_in_x0:
        sigma = (family.var.detach().double().cpu().sqrt() / family.mean.detach().double().cpu())
        gap, sd2 = sigma - sigma[0], sigma_data ** 2
        c_skip = sd2 / (gap ** 2 + sd2)
        c_out = gap * sigma_data / torch.sqrt(sd2 + sigma ** 2)
    else:
        c_skip, c_out = torch.zeros(T + 1, dtype=torch.float64), torch.ones(T + 1, dtype=torch.float64)
    c_skip[0], c_out[0] = 1.0, 0.0
    return c_skip, c_out


class ConsistencyFunction(nn.Module):
    """f(x_t, t) of a state-input denoiser with the boundary parametrisation; f(x, 0) = x exactly
    (no network call at step 0). Called like a denoiser: ``f(s_t, x_t, t, labels, guidance)``, the
    tail statistic ``s_t`` ignored."""

    def __init__(self, denoiser: nn.Module, family: Family | None = None, sigma_data: float = 0.5) -> None:
        super().__init__()
        if getattr(denoiser, "uses_tail", False):
            raise ValueError("a consistency function reads the state alone: build its denoiser with inputs=\"state\"")
        family = family if family is not None else denoiser.family
        self.denoiser, self.family, self.sigma_data = denoiser, family, float(sigma_data)
        self.affine = bool(family.affine_in_x0)
        c_skip, c_out = boundary_coefficients(family, sigma_data)
        scale = 1 / family.mean.detach().double().cpu() if self.affine else torch.ones(family.steps + 1,
                                                                                         dtype=torch.float64)
        if self.affine:  # on the x0 network read as a preconditioned denoiser (module docstring)
            sigma = family.var.detach().double().cpu().sqrt() * scale
            e_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
            e_out = (sigma * sigma_data / torch.sqrt(sigma ** 2 + sigma_data ** 2)).clamp(min=1e-300)
            c_skip, c_out = c_skip - c_out * e_skip / e_out, c_out / e_out
            c_skip[0], c_out[0] = 1.0, 0.0
        self.register_buffer("c_skip", c_skip, persistent=False)  # f = c_skip x/m + c_out D at t >= 1
        self.register_buffer("c_out", c_out, persistent=False)
        self.register_buffer("inv_mean", scale, persistent=False)

    @property
    def backbone(self) -> nn.Module:
        """The inner denoiser's backbone (its class count, its device)."""
        return self.denoiser.backbone

    def forward(self, s_t: Tensor | None, x_t: Tensor, t: Tensor | int, labels: Tensor | None = None,
                guidance: float | None = None) -> Tensor:
        t = as_steps(t, x_t.shape[0], x_t.device)
        inside = t > 0
        if not bool(inside.any()):
            return x_t.clone()
        rows = None if bool(inside.all()) else inside.nonzero().squeeze(1)
        x, tt = (x_t, t) if rows is None else (x_t[rows], t[rows])
        lab = labels if rows is None or labels is None else labels[rows]
        extra = {k: v for k, v in (("labels", lab), ("guidance", guidance)) if v is not None}
        d = self.denoiser(None, x, tt, **extra)
        if self.affine:
            c_skip, inv_mean, c_out = (_per_example(a, tt, d) for a in (self.c_skip, self.inv_mean, self.c_out))
            d = c_skip * x.to(d.dtype) * inv_mean + c_out * d
        if rows is None:
            return d
        return x_t.to(d.dtype).index_put((rows,), d)


def _per_example(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] in ``like``'s dtype and device, shaped (B, 1, ..., 1) against it."""
    return values.to(device=like.device, dtype=like.dtype)[t].reshape((-1,) + (1,) * (like.ndim - 1))


def interval_weights(family: Family, grid: list[int], kind: str = "uniform") -> Tensor:
    """The loss weights λ_n of the grid intervals n = 1..N (float64, mean 1): ``uniform`` (Song et al.
    2023), ``inverse-step`` λ_n ∝ 1/(σ_{g_n} − σ_{g_{n−1}}) (Song & Dhariwal 2023, "Improved
    techniques"), ``inverse-sqrt-step`` its square root; σ_t = sqrt(v_t)/m_t, so affine families only.
    With uniform weights the small steps near the data, where multistep sampling ends, weigh little
    against the large ones, and the student's error there grows as it trains (BENCHMARKS.md)."""
    if kind == "uniform":
        return torch.ones(len(grid) - 1, dtype=torch.float64)
    if kind not in ("inverse-step", "inverse-sqrt-step"):
        raise ValueError(f"unknown consistency weight {kind!r}; use uniform, inverse-step or inverse-sqrt-step")
    if not family.affine_in_x0:
        raise ValueError(f"consistency weight {kind!r} needs a family affine in x0 (sigma_t = sqrt(v_t)/m_t), "
                         f"not {family.name}")
    sigma = family.var.detach().double().cpu().sqrt() / family.mean.detach().double().cpu()
    points = torch.as_tensor(grid)
    w = 1 / (sigma[points[1:]] - sigma[points[:-1]])
    w = w.sqrt() if kind == "inverse-sqrt-step" else w
    return w / w.mean()


def consistency_terms(family: Family, student_f: Callable, target_f: Callable, teacher: Callable, x0: Tensor,
                      grid: list[int], generator: torch.Generator, labels: Tensor | None = None,
                      rows: slice = slice(None), weights: Tensor | None = None) -> Tensor:
    """The per-example CD losses (shape (B,) of ``rows``) of one batch: the steps and states are
    drawn for the whole batch from ``generator``, then the examples ``rows`` kept (a process's shard);
    ``weights`` (length N, :func:`interval_weights`) multiply each example's loss by its interval's."""
    points = torch.as_tensor(grid, dtype=torch.long, device=x0.device)
    n = torch.randint(1, points.numel(), (x0.shape[0],), generator=generator, device=generator.device).to(x0.device)
    t_n, t_prev = points[n], points[n - 1]
    x_n = family.sample(x0, t_n, generator)
    x_n, t_n, t_prev = x_n[rows], t_n[rows], t_prev[rows]
    labels = labels[rows] if labels is not None else None
    x_prev = teacher_step(family, teacher, x_n, t_n, t_prev, labels)
    with torch.no_grad():
        target = x_prev.clone()
        inside = (t_prev > 0).nonzero().squeeze(1)  # at g_{n-1} = 0 the target is x' itself
        if inside.numel():
            lab = labels[inside] if labels is not None else None
            target[inside] = predict(target_f, None, x_prev[inside], t_prev[inside], lab).to(target.dtype)
    pred = predict(student_f, None, x_n, t_n, labels)
    terms = (family.difference(pred, target.to(pred.dtype)) ** 2).flatten(1).mean(1)
    if weights is None:
        return terms
    return terms * weights.to(device=terms.device, dtype=terms.dtype)[(n - 1)[rows]]


def consistency_loss(family: Family, student_f: Callable, target_f: Callable, teacher: Callable, x0: Tensor,
                     grid: list[int], generator: torch.Generator, labels: Tensor | None = None) -> Tensor:
    """The CD loss of one batch (a scalar; see the module docstring); ``grid`` is ascending from 0
    (:func:`consistency_grid`), the functions are called as ``f(None, x, t[, labels])``."""
    return consistency_terms(family, student_f, target_f, teacher, x0, grid, generator, labels).mean()


@torch.no_grad()
def update_target(target: nn.Module, student: nn.Module, mu: float) -> None:
    """θ⁻ ← μ θ⁻ + (1 − μ) θ for the parameters; buffers copied."""
    for p_target, p in zip(target.parameters(), student.parameters()):
        p_target.mul_(mu).add_(p.detach(), alpha=1 - mu)
    for b_target, b in zip(target.buffers(), student.buffers()):
        b_target.copy_(b)


def consistency_stage(process, teacher: nn.Module, student: nn.Module, batches: Callable[[int], Iterator], cfg,
                      directory: Path, log_path: Path, *, teacher_steps: int, evaluations: int,
                      ema_target: float = 0.95, sigma_data: float = 0.5, weight: str = "uniform", seed: int = 0, fingerprint: dict | None = None, resume: bool = True,
                      log_every: int = 100, checkpoint_every: int = 1000, clip_grad: float | None = None,
                      log: Callable[[str], None] = print, group: Group = SINGLE) -> tuple[ConsistencyFunction, float]:
    """Distil the ρ = 1 sampler of ``teacher`` (a state-input denoiser) over ``teacher_steps`` grid
    intervals into ``student`` (a state-input ``Denoiser``, initialised by the caller) for
    ``cfg.steps_per_stage`` optimiser steps of ``cfg.batch_size`` examples at peak ``cfg.lr``;
    checkpoints under ``directory``, log lines to ``log_path``. Returns the target network θ⁻ as a
    :class:`ConsistencyFunction` in eval mode (sampled in ``evaluations`` steps by default) and the
    seconds the stage took over resumptions. ``process.family`` is the only part of the process used;
    ``batches(start_example)`` yields x0 (or (x0, labels)) batches from that position."""
    family, T, total = process.family, process.family.steps, int(cfg.steps_per_stage)
    grid = consistency_grid(T, teacher_steps)
    weights = None if weight == "uniform" else interval_weights(family, grid, weight)
    name = f"consistency {teacher_steps}→{evaluations}"
    target = copy.deepcopy(student).requires_grad_(False).eval()
    student_f, target_f = (ConsistencyFunction(m, family, sigma_data) for m in (student, target))
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    fingerprint = dict(fingerprint or {}, method="consistency", teacher=weights_digest(teacher),
                       teacher_steps=str(teacher_steps), evaluations=str(evaluations), steps_per_stage=str(total),
                       lr=repr(cfg.lr), batch_size=str(cfg.batch_size), ema_target=repr(ema_target),
                       sigma_data=repr(sigma_data), **({} if weight == "uniform" else {"weight": weight}))
    resumable = ResumableStage(
        student, optimizer, total, Path(directory), Path(log_path), fingerprint=fingerprint, log_every=log_every,
        checkpoint_every=checkpoint_every, clip_grad=clip_grad, group=group, log=log, name=name, prefix=f"{name}: ",
        fix="Lower distill.lr or set train.clip_grad", tag={"stage": evaluations, "method": "consistency"},
        mismatch=_mismatch, skip_finished=True)
    if group.main:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    found = open_stage(Path(directory), name, fingerprint["teacher"], resume, log, group)
    teacher.eval()
    device, stream = resumable.device, Stream(batches)
    lr, clock = cfg.lr, Seconds()

    def load(state: dict) -> None:
        clock.total = float(state["seconds"])
        target.load_state_dict(state["target"])

    def state() -> dict:
        return {"seconds": clock.tick(), "complete": resumable.step >= total, "evaluations": evaluations,
                "teacher_evaluations": teacher_steps, "sampling_rho": torch.zeros(T + 1, dtype=torch.float64),
                "consistency": True, "event_shape": list(family.event_shape), "target": target.state_dict(),
                "sigma_data": sigma_data}

    def losses() -> tuple[Tensor, float | None]:
        nonlocal lr
        step = resumable.step
        lr, x0, labels = linear_step(optimizer, stream, step, cfg, total, device)
        g = make_generator(device, (seed * 1_000_003 + _TAG) * 1_000_003 + step)
        terms = consistency_terms(family, student_f, target_f, teacher, x0, grid, g, labels,
                                  group.shard(cfg.batch_size), weights)
        loss = terms.sum() / cfg.batch_size  # this shard's share of the global batch mean
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return loss, None if torch.isfinite(loss) else float(loss)

    def record(loss: float) -> tuple[dict, str]:
        step = resumable.step
        return ({"stage": evaluations, "method": "consistency", "step": step, "loss": loss, "lr": lr,
                 "seconds": round(clock.tick(), 2)}, f"{name}: step {step}/{total}  loss {loss:.4g}  lr {lr:.2e}")

    resumable.run(found, losses=losses, record=record, load=load, state=state, begin=clock.begin,
                  stepped=lambda: update_target(target, student, ema_target))
    student.eval()
    return target_f.eval(), clock.total


def _mismatch(path: Path, differing: list[str]) -> str:
    return (f"{path} was written with different consistency-distillation settings ({', '.join(differing)}); "
            "distil afresh with --resume never (the earlier checkpoints are moved to checkpoints/replaced/)")

