"""Scoring rules, the Gaussian bridge and the sampler of distributional diffusion models
(De Bortoli et al. 2025, "Distributional diffusion models with scoring rules").

Forward process (linear schedule), t in [0, 1]::

    x_t = α_t x0 + σ_t ε,   α_t = 1 − t,   σ_t = t,   ε ~ N(0, I).

A distributional denoiser x̂0 = net(x_t, t, ξ), ξ ~ N(0, I), is trained so that x̂0 is a draw of
p(x0 | x_t), by minimising a proper scoring rule S(P, x0) over m draws g_1..g_m of P per example.

Generalised energy score (β in (0, 2], λ >= 0; negatively oriented, lower is better)::

    S_E(g, x) = (1/m) Σ_i ||g_i − x||^β  −  λ / (2 m (m−1)) Σ_{i≠j} ||g_i − g_j||^β,

an unbiased estimator of E||X − x||^β − (λ/2) E||X − X'||^β (X, X' iid ~ P); strictly proper
for λ = 1 and β in (0, 2). Norms run over all event dims. Each distance is computed as
(||a||² + eps)^{β/2}, so gradients stay finite where two draws coincide or a draw equals the
target; since u ↦ u^{β/2} is subadditive for β <= 2, the change of each distance lies in
[0, min(eps^{β/2}, (β/2) eps ||a||^{β−2})], hence |bias of S_E| <= max(1, λ/2) eps^{β/2}
(<= eps^{β/2} for λ <= 2). Note eps^{β/2} is not small for small β (1e-12^{0.05} ≈ 0.25), but
it is only reached at coincident points; at distances of order one the bias is ~ (β/2) eps.

Kernel (MMD) score with k(a, b) = exp(−||a − b||² / (2 h²))::

    S_K(g, x) = λ / (2 m (m−1)) Σ_{i≠j} k(g_i, g_j)  −  (1/m) Σ_i k(g_i, x),

whose expectation is (MMD²(P, δ_x) − k(x, x)) / 2 for λ = 1, hence proper.

Gaussian bridge (DDIM-generalised posterior) for 0 <= s < t <= 1, with α_{t|s} = α_t / α_s,
σ_{t|s}² = σ_t² − α_{t|s}² σ_s²::

    q(x_s | x_t, x0) = N( (α_{t|s} σ_s² / σ_t²) x_t + (α_s σ_{t|s}² / σ_t²) x0,  v I ),
    v = σ_{t|s}² σ_s² / σ_t²,
    ε̂ = (x_t − α_t x̂0) / σ_t,   c = η √v,
    x_s = α_s x̂0 + √(σ_s² − c²) ε̂ + c · noise.

η = 1 is the posterior above, η = 0 the deterministic DDIM step; for every η, x_t ~ q_t(· | x0)
gives x_s ~ q_s(· | x0). Likewise, if x̂0 is an exact draw of p(x0 | x_t), (x̂0, ε̂) has the law of
(x0, ε), so every η gives the exact marginal of x_s; η = 1 also gives the exact p(x_s | x_t). To stay exact at t = 1 (α_t = 0) and s = 0 (σ_s = 0), v is computed
from the factorised α_s² σ_t² − α_t² σ_s² = (α_s σ_t − α_t σ_s)(α_s σ_t + α_t σ_s) and
σ_s² − v = (α_t σ_s² / (α_s σ_t))², both free of cancellation.

Sampling (Algorithm 2): x_1 ~ N(0, I); on 1 = t_0 > ... > t_K = 0, draw ξ, x̂0 = net(x_{t_k},
t_k, ξ), then x_{t_{k+1}} = bridge(x_{t_k}, x̂0); at t_K = 0 return x̂0. When net samples the
exact posterior p(x0 | x_t), the output has the data law for any K (η = 1).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

SCORES = ("energy", "kernel")


def _flatten(draws: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(B, m, D) draws and (B, 1, D) target, after checking the shapes agree."""
    if draws.dim() < 2:
        raise ValueError(f"draws must have shape (B, m, ...), got {tuple(draws.shape)}")
    batch, m = draws.shape[:2]
    if m < 2:
        raise ValueError(f"need m >= 2 draws per example, got {m}")
    if tuple(target.shape) != (batch, *draws.shape[2:]):
        raise ValueError(f"target shape {tuple(target.shape)} does not match draws "
                         f"{tuple(draws.shape)} (expected {(batch, *draws.shape[2:])})")
    return draws.reshape(batch, m, -1), target.reshape(batch, 1, -1)


def _pair_differences(g: Tensor) -> Tensor:
    """g_i − g_j for the m(m−1)/2 pairs i < j: shape (B, m(m−1)/2, D)."""
    i, j = torch.triu_indices(g.shape[1], g.shape[1], offset=1, device=g.device)
    return g[:, i] - g[:, j]


def energy_score(draws: Tensor, target: Tensor, beta: float = 0.1, lam: float = 1.0,
                 eps: float = 1e-12) -> Tensor:
    """Generalised energy score per example, shape (B,); draws (B, m, ...), target (B, ...).

    (1/m) Σ_i ||g_i − x||^β − λ/(2m(m−1)) Σ_{i≠j} ||g_i − g_j||^β, each norm as
    (||·||² + eps)^{β/2} (finite gradients; |bias| <= max(1, λ/2) eps^{β/2})."""
    if not 0.0 < beta <= 2.0:
        raise ValueError(f"beta must lie in (0, 2], got {beta}")
    if lam < 0.0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    g, x = _flatten(draws, target)
    half = beta / 2.0
    confinement = ((g - x).pow(2).sum(-1) + eps).pow(half).mean(-1)
    # Σ_{i≠j} = 2 Σ_{i<j} and there are m(m−1)/2 pairs: the i≠j term is λ/2 · mean over i<j.
    interaction = (_pair_differences(g).pow(2).sum(-1) + eps).pow(half).mean(-1)
    return confinement - 0.5 * lam * interaction


def kernel_score(draws: Tensor, target: Tensor, bandwidth: float = 1.0,
                 lam: float = 1.0) -> Tensor:
    """Gaussian-kernel (MMD) score per example, shape (B,): λ/(2m(m−1)) Σ_{i≠j} k(g_i, g_j)
    − (1/m) Σ_i k(g_i, x), with k(a, b) = exp(−||a − b||² / (2 h²))."""
    if not bandwidth > 0.0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")
    if lam < 0.0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    g, x = _flatten(draws, target)
    scale = -0.5 / bandwidth ** 2
    fit = torch.exp(scale * (g - x).pow(2).sum(-1)).mean(-1)
    interaction = torch.exp(scale * _pair_differences(g).pow(2).sum(-1)).mean(-1)
    return 0.5 * lam * interaction - fit


def score(kind: str, draws: Tensor, target: Tensor, *, beta: float = 0.1, lam: float = 1.0,
          bandwidth: float = 1.0) -> Tensor:
    """The score named ``kind`` (one of :data:`SCORES`) per example, shape (B,)."""
    if kind == "energy":
        return energy_score(draws, target, beta=beta, lam=lam)
    if kind == "kernel":
        return kernel_score(draws, target, bandwidth=bandwidth, lam=lam)
    raise ValueError(f"unknown score {kind!r}; allowed values: {', '.join(SCORES)}")


def linear_schedule(t):
    """(α_t, σ_t) = (1 − t, t) for a float or a tensor t."""
    return 1 - t, t


def _times(value, like: Tensor, name: str) -> Tensor:
    """A float or (B,) tensor of times, as a tensor broadcastable over ``like``'s event dims."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() == 0:
        return value
    if value.dim() != 1 or value.shape[0] != like.shape[0]:
        raise ValueError(f"{name} must be a float or have shape ({like.shape[0]},), "
                         f"got {tuple(value.shape)}")
    return value.reshape(-1, *([1] * (like.dim() - 1)))


def _bridge_coefficients(t, s, eta: float, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(α_s, σ_t, √(σ_s² − c²), c) of the bridge from t to s; c = η √(posterior variance)."""
    t, s = _times(t, like, "t"), _times(s, like, "s")
    if bool(torch.any(s < 0)) or bool(torch.any(s >= t)) or bool(torch.any(t > 1)):
        raise ValueError("bridge_step needs 0 <= s < t <= 1")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    alpha_t, sigma_t = linear_schedule(t)
    alpha_s, sigma_s = linear_schedule(s)
    # σ_{t|s}² = (α_s σ_t − α_t σ_s)(α_s σ_t + α_t σ_s) / α_s², with α_s = 1 − s > 0 as s < t <= 1
    cond = (alpha_s * sigma_t - alpha_t * sigma_s) * (alpha_s * sigma_t + alpha_t * sigma_s)
    variance = cond * sigma_s ** 2 / (alpha_s * sigma_t) ** 2          # 0 at s = 0, σ_s² at t = 1
    keep = (alpha_t * sigma_s ** 2 / (alpha_s * sigma_t)) ** 2          # σ_s² − variance
    c = eta * variance.sqrt()
    return alpha_s, sigma_t, (keep + (1.0 - eta ** 2) * variance).sqrt(), c


def bridge_step(x_t: Tensor, x0_hat: Tensor, t, s, noise: Tensor, eta: float = 1.0) -> Tensor:
    """x_s = α_s x̂0 + √(σ_s² − c²) ε̂ + c·noise, ε̂ = (x_t − α_t x̂0)/σ_t, for 0 <= s < t <= 1
    (floats or (B,) tensors); η = 1 draws q(x_s | x_t, x0 = x̂0), η = 0 is DDIM. Returns x̂0
    exactly at s = 0."""
    alpha_s, sigma_t, keep, c = _bridge_coefficients(t, s, eta, x_t)
    alpha_t = 1 - _times(t, x_t, "t")
    eps_hat = (x_t - alpha_t * x0_hat) / sigma_t
    out = alpha_s * x0_hat + keep * eps_hat + c * noise
    s_full = _times(s, x_t, "s")
    return torch.where(s_full == 0, x0_hat, out)


def time_grid(steps: int) -> list[float]:
    """Uniform grid 1 = t_0 > t_1 > ... > t_steps = 0 (steps + 1 points)."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    return [(steps - k) / steps for k in range(steps + 1)]


Net = Callable[[Tensor, Tensor, Tensor], Tensor]
Callback = Callable[[int, float, Tensor, Tensor], None]


def sample_distributional(net: Net, x1: Tensor, steps: int,
                          generator: torch.Generator | None = None, eta: float = 1.0,
                          callback: Callback | None = None) -> Tensor:
    """Algorithm 2: from x_1 (≈ N(0, I)), ``steps`` calls x̂0 = net(x_t, t, ξ) with t a (B,)
    tensor and ξ ~ N(0, I) shaped like x1, each followed by the bridge to the next grid time;
    returns the last x̂0 (at t = 0). ``callback(k, t_k, x_{t_k}, x̂0)`` runs after each call.

    Randomness, in order per step: ξ, then (except at the last step) the bridge noise, both
    ``torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)``."""
    grid = time_grid(steps)
    x = x1
    x0_hat = x1
    for k in range(steps):
        t, s = grid[k], grid[k + 1]
        t_batch = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        xi = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
        x0_hat = net(x, t_batch, xi)
        if callback is not None:
            callback(k, t, x, x0_hat)
        if s > 0.0:
            noise = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
            x = bridge_step(x, x0_hat, t, s, noise, eta)
    return x0_hat


__all__ = ["SCORES", "energy_score", "kernel_score", "score", "linear_schedule",
           "bridge_step", "time_grid", "sample_distributional"]
