"""Flow matching / rectified flow: the straight path, its time laws, ODE samplers and Gaussian oracles.

Conventions (Lipman et al. 2023, "Flow Matching for Generative Modeling"; Liu et al. 2023,
"Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow"):

* data x0, noise ε ~ N(0, I), time t ∈ [0, 1] with t = 1 pure noise;
* the path x_t = (1 − t) x0 + t ε and its velocity target v = dx_t/dt = ε − x0;
* a velocity field v(x, t) minimises E‖v(x_t, t) − (ε − x0)‖², so v*(x, t) = E[ε − x0 | x_t = x];
* sampling integrates dx/dt = v(x, t) from t = 1 (x ~ N(0, I)) down to t = 0 on a uniform grid
  (:func:`ode_sample`, whose steps :func:`solver_steps` lists).

For Gaussian data the optimum is affine in x and known in closed form (:func:`gaussian_velocity`,
for any jointly Gaussian coupling of x0 and ε), and so is the flow map of the ODE of the
independent coupling (:func:`gaussian_ode_map`): these are the network-free oracles against which
the samplers and the reflow (rectification) identities are tested. :func:`transport_cost` and
:func:`straightness` measure a coupling.

Pure maths: no network, no spec. Oracles: ``tests/kinds/test_flow_paths.py``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

SCHEDULES = ("uniform", "logit-normal")
SOLVERS = ("euler", "heun")

Velocity = Callable[[Tensor, Tensor], Tensor]


def _time_like(t, x: Tensor) -> Tensor:
    """t as a tensor broadcastable against x (B, ...): shape (B,) becomes (B, 1, ..., 1)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape ({x.shape[0]},) to match x of shape {tuple(x.shape)}, "
                         f"got {tuple(t.shape)}")
    return t.reshape((-1,) + (1,) * (x.ndim - 1))


def interpolate(x0: Tensor, noise: Tensor, t) -> Tensor:
    """x_t = (1 − t) x0 + t ε; t of shape (B,) (or a scalar) is broadcast over the event dims."""
    t = _time_like(t, x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: Tensor, noise: Tensor) -> Tensor:
    """The conditional velocity dx_t/dt = ε − x0 (constant in t along the straight path)."""
    return noise - x0


def draw_times(n: int, schedule: str, generator: torch.Generator | None = None, *, mean: float = 0.0,
               std: float = 1.0, device="cpu", dtype=torch.float64) -> Tensor:
    """n training times: "uniform" is U(0, 1); "logit-normal" is sigmoid(N(mean, std²)) (Esser et
    al. 2024, SD3). Only ``generator`` is consumed (the global RNG when it is None)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown time schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if schedule == "uniform":
        return torch.rand(n, generator=generator, device=device, dtype=dtype)
    if not std >= 0:
        raise ValueError(f"logit-normal std must be >= 0, got {std}")
    z = torch.randn(n, generator=generator, device=device, dtype=dtype)
    return torch.sigmoid(mean + std * z)


def solver_steps(evaluations: int, solver: str) -> list[tuple[float, float, str]]:
    """The steps (t_from, t_to, kind) of :func:`ode_sample`, from t = 1 to t = 0 on a uniform grid.

    Euler: ``evaluations`` steps of one call each. Heun: ``evaluations // 2`` steps of two calls
    each, preceded by one Euler step when ``evaluations`` is odd. The calls add up to
    ``evaluations`` exactly."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; allowed: {', '.join(SOLVERS)}")
    if isinstance(evaluations, bool) or int(evaluations) != evaluations or evaluations < 1:
        raise ValueError(f"evaluations must be an integer >= 1, got {evaluations!r}")
    evaluations = int(evaluations)
    if solver == "euler":
        kinds = ["euler"] * evaluations
    else:
        kinds = ["euler"] * (evaluations % 2) + ["heun"] * (evaluations // 2)
    m = len(kinds)
    return [((m - k) / m, (m - k - 1) / m, kind) for k, kind in enumerate(kinds)]


def ode_sample(velocity: Velocity, x1: Tensor, evaluations: int, solver: str = "euler", *,
               callback: Callable[[Tensor, float], None] | None = None) -> Tensor:
    """Integrate dx/dt = velocity(x, t) from x(1) = x1 down to t = 0 with exactly ``evaluations``
    calls of ``velocity`` (t passed as a (B,) tensor of x's dtype and device); the steps are
    :func:`solver_steps`. Heun is the trapezoid predictor-corrector; its corrector evaluates at
    t_to, which may be 0. ``callback(x, t_to)`` is called after every step."""
    steps = solver_steps(evaluations, solver)
    x = x1
    batch = x.shape[0]

    def call(state: Tensor, t: float) -> Tensor:
        return velocity(state, torch.full((batch,), t, dtype=state.dtype, device=state.device))

    for t_from, t_to, kind in steps:
        h = t_to - t_from  # negative: time runs backwards
        v_from = call(x, t_from)
        if kind == "euler":
            x = x + h * v_from
        else:
            predicted = x + h * v_from
            x = x + 0.5 * h * (v_from + call(predicted, t_to))
        if callback is not None:
            callback(x, t_to)
    return x


def _as_f64(value, device=None) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64, device=device)


def gaussian_velocity(mean, cov, cross=None) -> Velocity:
    """The exact minimiser v*(x, t) = E[ε − x0 | x_t = x] of the flow-matching loss when
    x0 ~ N(mean, cov) (d-dim), ε ~ N(0, I) and Cov(x0, ε) = E[(x0 − mean) εᵀ] = ``cross``
    (None: independent). With u = ε − x0 and C = cross,

        E[x_t] = (1 − t) μ,   S_t = Cov(x_t) = (1 − t)² Σ + t² I + t (1 − t) (C + Cᵀ),
        Cov(u, x_t) = t I − (1 − t) Σ + (1 − t) Cᵀ − t C,
        v*(x, t) = −μ + Cov(u, x_t) S_t⁻¹ (x − (1 − t) μ),

    by Gaussian conditioning, with a linear solve so that t = 0 and t = 1 are covered (S_0 = Σ
    must be invertible for t = 0). The returned callable takes x (B, d) and t (B,); it computes in
    float64 and returns x's dtype."""
    mu = _as_f64(mean)
    sigma = _as_f64(cov)
    d = mu.shape[-1]
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise ValueError(f"mean must be (d,) and cov (d, d), got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    c = torch.zeros_like(sigma) if cross is None else _as_f64(cross)
    if c.shape != (d, d):
        raise ValueError(f"cross must be (d, d) = {(d, d)}, got {tuple(c.shape)}")

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        dev = x.device
        m, s, cc = mu.to(dev), sigma.to(dev), c.to(dev)
        eye = torch.eye(d, dtype=torch.float64, device=dev)
        t = torch.as_tensor(t, dtype=torch.float64, device=dev).reshape(-1).expand(x.shape[0])
        shared = bool((t == t[0]).all())  # the sampler's case: one solve for the whole batch
        times = t[:1] if shared else t
        tt = times.reshape(-1, 1, 1)
        cov_t = (1 - tt) ** 2 * s + tt ** 2 * eye + tt * (1 - tt) * (cc + cc.T)
        cross_t = tt * eye - (1 - tt) * s + (1 - tt) * cc.T - tt * cc  # Cov(u, x_t)
        gain_t = torch.linalg.solve(cov_t, cross_t.transpose(-1, -2))  # S_t⁻¹ Cov(x_t, u), S_t symmetric
        centred = x.to(torch.float64) - (1 - t).unsqueeze(-1) * m
        if shared:
            v = centred @ gain_t[0]
        else:
            v = (centred.unsqueeze(-2) @ gain_t).squeeze(-2)
        return (v - m).to(x.dtype)

    return velocity


def _sqrtm_psd(sigma: Tensor) -> Tensor:
    """The symmetric positive semi-definite square root, by eigendecomposition."""
    sym = 0.5 * (sigma + sigma.T)
    values, vectors = torch.linalg.eigh(sym)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def gaussian_ode_map(mean, cov) -> tuple[Tensor, Tensor]:
    """The flow map x1 = ε ↦ x0 = A ε + b of the ODE of the independent coupling for data
    N(mean, cov), integrated from t = 1 to t = 0: A = Σ^{1/2} (symmetric PSD root), b = μ.

    Derivation: the marginals are N((1 − t) μ, S_t) with S_t = (1 − t)² Σ + t² I, and v* gives
    d/dt (x − (1 − t) μ) = (t I − (1 − t) Σ) S_t⁻¹ (x − (1 − t) μ) = ½ S_t' S_t⁻¹ (x − (1 − t) μ).
    Σ and I commute, so in Σ's eigenbasis each coordinate scales as s(t)^{1/2}; from s(1) = 1 to
    s(0) = λ this is the factor λ^{1/2}, i.e. A = Σ^{1/2} (the W2-optimal map from N(0, I))."""
    mu = _as_f64(mean)
    return _sqrtm_psd(_as_f64(cov)), mu.clone()


def transport_cost(x0: Tensor, x1: Tensor) -> Tensor:
    """E‖x0 − x1‖² of a coupling given as paired examples: squared norm over the event dims,
    averaged over the batch (a 0-d tensor)."""
    return (x0 - x1).pow(2).reshape(x0.shape[0], -1).sum(-1).mean()


def straightness(velocity: Velocity, x0: Tensor, x1: Tensor, times: int = 64) -> Tensor:
    """Liu et al.'s straightness E_t E‖(x1 − x0) − v(x_t, t)‖² of the coupling (x0, x1) under the
    velocity field v, with t on the uniform midpoint grid (k + ½)/times; 0 when the flow of v
    moves every pair along its straight line at constant speed (a 0-d tensor)."""
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    target = velocity_target(x0, x1)
    total = x0.new_zeros(())
    for k in range(times):
        t = torch.full((x0.shape[0],), (k + 0.5) / times, dtype=x0.dtype, device=x0.device)
        v = velocity(interpolate(x0, x1, t), t)
        total = total + (target - v).pow(2).reshape(x0.shape[0], -1).sum(-1).mean()
    return total / times
