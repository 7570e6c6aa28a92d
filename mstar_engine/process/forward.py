"""Forward processes that build training inputs (MATH.md §1, §2).

One function serves both processes: :func:`rollout` runs the chain from x_T down to the lowest
requested step, drawing x_{t-1} independently (star-shaped, ρ_t = 0) or through the coupled
kernel (M-Star, ρ_t > 0), and accumulates the tail statistic s_t = Σ_{k≥t} A_k^T T(x_k) on the
way. No network is called. Several steps ``t`` per example come from one roll-out ("keep"), and
each example is only simulated down to its lowest kept step, so the star-shaped process draws
exactly the steps it needs. A family with ``draws_exact_tail`` (Gaussian) draws (x_t, s_t) for a single
kept step from their exact joint law instead. A family with ``from_noise_along`` (Beta, Dirichlet,
Gamma, Wishart) also carries a state of its noise map down a coupled chain (there: where each
step's inverse CDF starts).
"""
from __future__ import annotations

import attrs
import torch
from torch import Tensor

from mstar_engine.families.base import Family
from mstar_engine.process.kernel import coupled_step


@attrs.frozen
class Rollout:
    """States and tail statistics at the kept steps: ``x`` is (B, K, *event), ``s`` (B, K, *stat)."""

    t: Tensor
    x: Tensor
    s: Tensor


def rollout(family: Family, x0: Tensor, keep: Tensor, rho: Tensor | None = None,
            generator: torch.Generator | None = None) -> Rollout:
    """Simulate q(x_{t:T} | x0) and return (x_t, s_t) for every step in ``keep`` (shape (B, K),
    values in 1..T). ``rho`` has length T + 1 (ρ_t couples x_t → x_{t-1}); None or zeros is the
    star-shaped process. Runs without gradients."""
    if keep.ndim == 1:
        keep = keep[:, None]
    batch, k = keep.shape
    T = family.steps
    keep = keep.to(x0.device)
    if int(keep.min()) < 1 or int(keep.max()) > T:
        raise ValueError(f"steps to keep must lie in 1..{T}, got {int(keep.min())}..{int(keep.max())}")
    if k == 1 and family.draws_exact_tail:  # Gaussian: the joint law of (x_t, s_t) in closed form
        with torch.no_grad():
            x_t, s_t = family.exact_tail(x0, keep[:, 0], rho, generator)
        return Rollout(keep, x_t[:, None], s_t[:, None])
    lowest = keep.min(dim=1).values
    rho_values = None if rho is None or not bool((rho != 0).any()) else rho.detach().to(x0.device)
    # For a bijective noise map, to_noise(from_noise(ξ)) = ξ: carry ξ down the chain instead of
    # inverting x_t at every step (same law, half the noise-map work).
    carry = rho_values is not None and not family.inverse_uses_aux
    # A family may also carry a state of its noise map down the chain (Beta: a start for each solve)
    along = getattr(family, "from_noise_along", None) if carry else None
    with torch.no_grad():
        x = torch.empty_like(x0)
        xi = x0.new_empty((batch, *family.noise_shape)) if carry else None
        state = None  # what from_noise_along returned, per example (full batch)
        s = x0.new_zeros((batch, *family.stat_shape))
        out_x = x0.new_empty((batch, k, *x0.shape[1:]))
        out_s = x0.new_empty((batch, k, *family.stat_shape))
        for step in range(T, int(lowest.min()) - 1, -1):
            idx = torch.nonzero(lowest <= step).squeeze(1)
            full = idx.numel() == batch
            sel = slice(None) if full else idx  # every example still runs: views, not gathers
            fresh = step == T or rho_values is None or float(rho_values[step + 1]) == 0.0
            if carry:
                eps = torch.randn((idx.numel(), *family.noise_shape), generator=generator, device=x0.device,
                                  dtype=x0.dtype)
                if not fresh:
                    r = rho_values[step + 1].to(x0.dtype)
                    xi_prev = xi[sel]
                    eps = r * xi_prev + torch.sqrt(1 - r * r) * eps
                if along is None:
                    x_new = family.from_noise(eps, x0[sel], step)
                else:
                    before = None
                    if not fresh and state is not None:
                        before = (xi_prev, state if full else tuple(v[idx] for v in state))
                    x_new, new_state = along(eps, x0[sel], step, before)
                    state = _keep_state(state, new_state, idx, batch, full)
                xi[sel] = eps
            elif fresh:
                x_new = family.sample(x0[sel], step, generator)
            else:
                x_new = coupled_step(family, x[sel], x0[sel], step + 1, rho_values[step + 1], generator)
            x[sel] = x_new
            s[sel] += family.stat(x_new, step)
            rows, cols = torch.nonzero(keep[sel] == step, as_tuple=True)
            if rows.numel():
                out_x[idx[rows], cols] = x_new[rows]
                out_s[idx[rows], cols] = s[idx[rows]]
    return Rollout(keep, out_x, out_s)


def _keep_state(state: tuple | None, new: tuple | None, idx: Tensor, batch: int, full: bool) -> tuple | None:
    """The full-batch chain state after the examples ``idx`` moved on to ``new``."""
    if new is None:
        return None
    if full:
        return new
    if state is None:
        state = tuple(v.new_full((batch, *v.shape[1:]), float("nan")) for v in new)
    for buf, v in zip(state, new):
        buf[idx] = v
    return state
