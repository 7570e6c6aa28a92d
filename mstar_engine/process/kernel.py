"""The marginal-preserving Gaussian-copula kernel of MATH.md §2."""
from __future__ import annotations

import torch
from torch import Tensor

from mstar_engine.families.base import Family, as_steps


def coupled_step(family: Family, x_t: Tensor, x0: Tensor, t: Tensor | int, rho: Tensor | float,
                 generator: torch.Generator | None = None, eps: Tensor | None = None) -> Tensor:
    """Draw x_{t-1} from k_t(· | x_t, x0):

        ξ_t = to_noise(x_t, x0, t);  ξ' = ρ ξ_t + sqrt(1 − ρ²) ε;  x_{t-1} = from_noise(ξ', x0, t − 1).

    ``rho`` is a float or a per-example tensor of shape ``(B,)``. If x_t ~ q_t(· | x0) then
    x_{t-1} ~ q_{t-1}(· | x0) exactly, for every ρ in [0, 1]. ``eps`` fixes the fresh noise
    (common random numbers); the auxiliary draws of ``to_noise`` come from ``generator``.
    """
    t = as_steps(t, x_t.shape[0], x_t.device)
    xi = family.to_noise(x_t, x0, t, generator)
    if eps is None:
        eps = torch.randn(xi.shape, generator=generator, device=xi.device, dtype=xi.dtype)
    rho = torch.as_tensor(rho, dtype=xi.dtype, device=xi.device)
    if rho.ndim == 1:
        rho = rho.reshape((-1,) + (1,) * (xi.ndim - 1))
    xi_new = rho * xi + torch.sqrt(torch.clamp(1 - rho * rho, min=0.0)) * eps
    return family.from_noise(xi_new, x0, t - 1)
