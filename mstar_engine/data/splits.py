"""Seeded train / held-out splits used for evaluation."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def holdout_split(x: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split ``x`` along its first axis into ``(train, held_out)``.

    ``held_out`` holds ``round(n · fraction)`` rows (Python's ``round``), chosen by a permutation
    from ``numpy.random.default_rng(seed)``; ``train`` holds the rest. Both keep the rows in
    their original order, so the split is fully determined by ``(n, fraction, seed)`` and the two
    parts are disjoint and together cover ``x``.
    """
    if x.ndim < 1:
        raise ValueError(f"holdout_split needs a batch axis, got a tensor of shape {tuple(x.shape)}")
    fraction = float(fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"holdout fraction must lie in [0, 1], got {fraction}")
    if int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    n = x.shape[0]
    held = int(round(n * fraction))
    perm = np.random.default_rng(int(seed)).permutation(n)
    held_idx = torch.as_tensor(np.sort(perm[:held]), dtype=torch.long, device=x.device)
    train_idx = torch.as_tensor(np.sort(perm[held:]), dtype=torch.long, device=x.device)
    return x.index_select(0, train_idx), x.index_select(0, held_idx)
