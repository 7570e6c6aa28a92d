"""The kernel KL of the coupled process (MATH.md §2 "Bound", "Coupling schedules"):

    KL( k_t(· | x_t, x0) ‖ k_t(· | x_t, x̂0) ),   k_t = the Gaussian-copula kernel with coupling ρ_t.

* Families with ``closed_form_kernel_kl`` (Gaussian): their ``coupled_kl``.
* Families whose noise map is a bijection (``inverse_uses_aux`` False: every built-in continuous
  family; Beta per coordinate, Dirichlet by stick-breaking, vMF by angles): a reparameterised Monte
  Carlo estimate with the copula kernel density

      k(y | x_t, x0) = q_{t-1}(y | x0) · N(ξ_y; ρ ξ_t, 1 − ρ²) / N(ξ_y; 0, 1),

  ξ_t = to_noise(x_t, x0, t), ξ_y = to_noise(y, x0, t − 1). The Jacobian of the noise map cancels in
  the ratio, so the formula holds for any bijective map, per coordinate or not. Gradients reach ρ
  through y = from_noise(ρ ξ_t + sqrt(1 − ρ²) ε, x0, t − 1).
* Discrete families (``discrete_kernel``, a ``kernel_probs`` method): an exact sum over classes.
* A (plug-in) family whose inverse draws auxiliary variables has no tractable kernel density: the
  ``learned`` coupling falls back to the ``ddpm`` rule for it (:func:`learnable`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from mstar_engine.families.base import Family, as_steps

RHO_MAX = 1.0 - 1e-6  # ρ = 1 makes the kernel a point mass: its KL is infinite unless the means agree


def learnable(family: Family | type[Family]) -> bool:
    """True when the kernel KL of ``family`` (an instance or a class) can be evaluated: closed
    form, exact sum or Monte Carlo."""
    return family.closed_form_kernel_kl or not family.inverse_uses_aux or family.discrete_kernel


def _log_ratio_normal(z: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Σ log N(z; mean, var) − log N(z; 0, 1) over all but the batch dimension."""
    out = -0.5 * (z - mean) ** 2 / var - 0.5 * torch.log(var) + 0.5 * z * z
    return out.flatten(1).sum(1)


def kernel_kl(family: Family, x_t: Tensor, x0: Tensor, x0_hat: Tensor, t: Tensor | int, rho: Tensor,
              generator: torch.Generator | None = None, monte_carlo: bool | None = None) -> Tensor:
    """Per-example kernel KL, shape (B,). ``rho`` is a scalar or a (B,) tensor (it may carry
    gradients); ``monte_carlo`` forces (True) or forbids (False) the Monte Carlo estimate; by
    default a family with a closed form uses it."""
    batch = x0.shape[0]
    t = as_steps(t, batch, x0.device)
    rho = torch.as_tensor(rho, dtype=x0.dtype, device=x0.device).clamp(0.0, RHO_MAX).expand(batch)
    if monte_carlo is None:
        monte_carlo = not family.closed_form_kernel_kl
    if not monte_carlo:
        if not family.closed_form_kernel_kl:
            raise ValueError(f"the {family.name} family has no closed-form kernel KL")
        return family.coupled_kl(x0, x0_hat, t, rho)
    if family.discrete_kernel:
        k0 = family.kernel_probs(x_t, x0, t, rho)
        k1 = family.kernel_probs(x_t, x0_hat, t, rho)
        live = k0 > 0
        terms = torch.where(live, k0 * (torch.log(torch.where(live, k0, 1.0)) -
                                        torch.log(torch.where(live, k1, 1.0).clamp(min=1e-300))), 0.0)
        return terms.flatten(1).sum(1).to(x0.dtype)
    if family.inverse_uses_aux:
        raise ValueError(f"the {family.name} family's inverse noise map draws auxiliary variables, so its "
                         "kernel density is intractable; use the ddpm coupling rule")
    r = rho.reshape((batch,) + (1,) * len(family.noise_shape))
    var = 1 - r * r
    xi_t = family.to_noise(x_t, x0, t)
    eps = torch.randn(xi_t.shape, generator=generator, device=xi_t.device, dtype=xi_t.dtype)
    z = r * xi_t + torch.sqrt(var) * eps
    y = family.from_noise(z, x0, t - 1)
    log_k0 = family.log_prob(y, x0, t - 1) + _log_ratio_normal(z, r * xi_t, var)
    xi_t_hat = family.to_noise(x_t, x0_hat, t)
    z_hat = family.to_noise(y, x0_hat, t - 1)
    log_k1 = family.log_prob(y, x0_hat, t - 1) + _log_ratio_normal(z_hat, r * xi_t_hat, var)
    return log_k0 - log_k1
