"""norm_t: the per-step normalisation of the tail statistic (MATH.md §1).

Statistics (pooled scalar mean and std per step of the family's ``norm_quantity``) are estimated
once from the same forward process the model is trained on, stored in the checkpoint, and reused
at sampling, so the training and sampling inputs are normalised identically.
"""
from __future__ import annotations

from typing import Iterable

import attrs
import torch
from torch import Tensor

from mstar_engine.families.base import Family
from mstar_engine.process.forward import rollout


@attrs.define
class TailNorm:
    mean: Tensor  # (T + 1,), index 0 copies step 1
    std: Tensor

    def __call__(self, family: Family, s: Tensor, t: Tensor) -> Tensor:
        mean = self.mean.to(s.device, s.dtype)[t]
        std = self.std.to(s.device, s.dtype)[t]
        return family.normalise_stat(s, mean, std)

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean.clone(), "std": self.std.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "TailNorm":
        return cls(state["mean"].clone(), state["std"].clone())

    @classmethod
    def estimate(cls, family: Family, batches: Iterable[Tensor], rho: Tensor | None = None,
                 generator: torch.Generator | None = None) -> "TailNorm":
        """Pool the per-step mean and std of ``norm_quantity(s_t)`` over roll-outs of every x0 batch."""
        T = family.steps
        total = torch.zeros(T + 1, dtype=torch.float64)
        squares = torch.zeros(T + 1, dtype=torch.float64)
        count = torch.zeros(T + 1, dtype=torch.float64)
        for x0 in batches:
            b = x0.shape[0]
            out = rollout(family, x0, torch.arange(1, T + 1).expand(b, T), rho, generator)
            q = family.norm_quantity(out.s.flatten(0, 1)).double().reshape(b, T, -1)
            total[1:] += q.sum((0, 2)).cpu()
            squares[1:] += q.pow(2).sum((0, 2)).cpu()
            count[1:] += q.shape[0] * q.shape[2]
        if not bool((count[1:] > 0).all()):
            raise ValueError("tail normalisation needs at least one batch of data")
        mean = total[1:] / count[1:]
        std = (squares[1:] / count[1:] - mean ** 2).clamp(min=0).sqrt().clamp(min=1e-12)
        return cls(torch.cat([mean[:1], mean]), torch.cat([std[:1], std]))
