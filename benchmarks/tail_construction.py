"""Benchmark: training-input construction for Beta diffusion on CIFAR-sized batches.

Compares, in one process on the same machine:

* naive   — the published implementation's method: for each example draw all T steps with
            ``torch.distributions.Beta`` (x0 tiled T times), mask the steps s < t and sum
            ν_s logit(x_s). Measured on a sub-batch (the full batch needs ~20 GiB) and scaled
            linearly to the batch, which is exact for this embarrassingly parallel loop.
* star    — mstar's star-shaped roll-out (``process.forward.rollout`` with ρ = 0): each example is
            simulated only from T down to its own t.
* coupled — mstar's coupled roll-out (ρ_t from the ddpm rule), which must run the noise maps
            (Gamma inverse CDFs) at every step; timed on a few steps and scaled to T, and
            amortised over K training steps t per roll-out.

Usage: python benchmarks/tail_construction.py [--batch 128] [--steps 1000] [--naive-batch 2]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from mstar_engine.families.beta import Beta
from mstar_engine.process.forward import rollout
from mstar_engine.schedules import build_coupling, build_schedule, gaussian_equivalent_snr


def naive_tail(nu: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The published method: all T draws per example, masked sum (float32 like the original)."""
    steps = nu.shape[0] - 1
    b = x0.shape[0]
    nus = nu[1:].float().reshape(1, steps, *([1] * (x0.ndim - 1)))
    x0t = x0.unsqueeze(1)
    draws = torch.distributions.Beta(1 + nus * x0t, 1 + nus * (1 - x0t)).sample()  # (b, T, ...)
    draws = draws.clamp(1e-4, 1 - 1e-4)
    mask = (torch.arange(1, steps + 1).reshape(1, steps) >= t.reshape(b, 1)).float()
    mask = mask.reshape(b, steps, *([1] * (x0.ndim - 1)))
    return (mask * nus * torch.logit(draws)).sum(1)


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--naive-batch", type=int, default=2)
    parser.add_argument("--coupled-steps", type=int, default=5, help="steps timed for the coupled roll-out")
    parser.add_argument("--per-rollout", type=int, default=8, help="training steps t per coupled roll-out")
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (3, 32, 32)
    T, B = args.steps, args.batch
    nu = build_schedule("beta-cosine", T)["nu"]
    fam = Beta(shape, nu=nu)
    x0 = torch.rand(B, *shape).clamp(0.01, 0.99)
    t = torch.randint(1, T + 1, (B,))
    g = torch.Generator().manual_seed(0)
    numel = B * int(torch.tensor(shape).prod())

    nb = args.naive_batch
    naive = timed(lambda: naive_tail(nu, x0[:nb], t[:nb])) * B / nb
    naive_bytes = T * numel * 4 * 4  # draws, parameters (α, β) and the masked product, float32

    star = timed(lambda: rollout(fam, x0, t, generator=g))
    kk = args.per_rollout
    star_k = timed(lambda: rollout(fam, x0, torch.randint(1, T + 1, (B, kk)), generator=g)) / kk
    rho = build_coupling("ddpm", T, snr=gaussian_equivalent_snr("beta-cosine", T))
    k = args.coupled_steps
    # time k coupled steps at the top of the chain (every example active), scale to T steps
    keep = torch.full((B,), T - k + 1)
    coupled_k = timed(lambda: rollout(fam, x0, keep, rho=rho, generator=g))
    coupled = coupled_k * T / k

    rows = [
        ("naive full tail (torch Beta, all T draws)", naive, naive_bytes / 2**30),
        ("star-shaped tail (mstar rollout, rho = 0)", star, None),
        (f"star-shaped tail per training step (K = {args.per_rollout})", star_k, None),
        (f"coupled roll-out (ddpm rho), per roll-out", coupled, None),
        (f"coupled roll-out per training step (K = {args.per_rollout})", coupled / args.per_rollout, None),
    ]
    print(f"Beta, T = {T}, batch {B} x {shape}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'method':55s} {'s / batch':>10s} {'vs naive':>9s} {'GiB':>6s}")
    for name, sec, gib in rows:
        print(f"{name:55s} {sec:10.2f} {naive / sec:8.1f}x {'' if gib is None else f'{gib:6.1f}'}")


if __name__ == "__main__":
    main()
