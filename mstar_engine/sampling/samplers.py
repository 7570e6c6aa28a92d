"""The reverse process (MATH.md §1 "Sampling", §2 "Reverse step").

Every sampler works on an explicit grid of the steps at which the network is evaluated; between
two grid points the last prediction x̂0 is reused (the block rule) while every intermediate x_s
is still drawn and added to the tail statistic, so the law of s_t is the one seen in training.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor

from mstar_engine.families.base import Family, as_steps
from mstar_engine.process.kernel import coupled_step


class Denoiser(Protocol):
    def __call__(self, s_t: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x̂0 from the (raw) tail statistic and the state at step t; normalisation is its own."""


def step_grid(steps: int, evaluations: int) -> list[int]:
    """Steps (descending, starting at T) where the network is evaluated: T − j·T/K, j = 0..K−1."""
    if not 1 <= evaluations <= steps:
        raise ValueError(f"network evaluations must lie in 1..{steps}, got {evaluations}")
    return sorted({round(steps - j * steps / evaluations) for j in range(evaluations)}, reverse=True)


def reverse_step(family: Family, x_t: Tensor, x0_hat: Tensor, t: int, rho_t: float,
                 generator: torch.Generator | None = None, eps: Tensor | None = None) -> Tensor:
    """Draw x_{t-1} given x_t and the prediction x̂0: an independent draw of q_{t-1}(· | x̂0) when
    ρ_t = 0 (star-shaped), else the coupled kernel k_t(· | x_t, x̂0)."""
    if rho_t == 0.0:
        if eps is not None:
            return family.from_noise(eps, x0_hat, as_steps(t - 1, x_t.shape[0], x_t.device))
        return family.sample(x0_hat, t - 1, generator)
    return coupled_step(family, x_t, x0_hat, t, rho_t, generator, eps)


@torch.no_grad()
def sample(denoiser: Denoiser, family: Family, n: int, grid: list[int], rho: Tensor | None = None, *,
           generator: torch.Generator | None = None, device: torch.device | str = "cpu",
           dtype: torch.dtype = torch.float32, final: str = "x0",
           callback: Callable[[dict], None] | None = None) -> Tensor:
    """Run the reverse process from x_T ~ prior to step 0 and return the last x̂0 (``final="x0"``)
    or the final draw x_0 from the pseudo step (``final="draw"``)."""
    T = family.steps
    if not grid or grid[0] != T:
        raise ValueError(f"the grid must start at T = {T}, got {grid[:3]}...")
    evaluate = set(grid)
    rho = torch.zeros(T + 1) if rho is None else rho.detach().cpu()
    x = family.prior_sample(n, generator, device=device, dtype=dtype)
    s = family.stat(x, T)
    x0_hat = None
    for t in range(T, 0, -1):
        if t in evaluate:
            x0_hat = denoiser(s, x, as_steps(t, n, x.device))
        x = reverse_step(family, x, x0_hat, t, float(rho[t]), generator)
        if t > 1:
            s = s + family.stat(x, t - 1)
        if callback is not None:
            callback({"t": t, "x": x, "s": s, "x0_hat": x0_hat})
    return x0_hat if final == "x0" else x
