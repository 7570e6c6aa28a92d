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
                                             [--network-batch 8] [--convergence-rules]
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
    parser.add_argument("--network-batch", type=int, default=0, help="also time the CIFAR U-Net training step on "
                        "this many images (scaled to --batch) and report each roll-out as a fraction of a step")
    parser.add_argument("--convergence-rules", action="store_true", help="also time the coupled steps with the "
                        "inverse CDF's former stopping rule beside the current one")
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
    coupled_k = timed(lambda: rollout(fam, x0, keep, rho=rho, generator=g), repeats=2)  # best of 2: no warm-up
    coupled = coupled_k * T / k

    rows = [
        ("naive full tail (torch Beta, all T draws)", naive, naive_bytes / 2**30),
        ("star-shaped tail (mstar rollout, rho = 0)", star, None),
        (f"star-shaped tail per training step (K = {args.per_rollout})", star_k, None),
        ("coupled roll-out (ddpm rho), per roll-out", coupled, None),
        (f"coupled roll-out per training step (K = {args.per_rollout})", coupled / args.per_rollout, None),
    ]
    print(f"Beta, T = {T}, batch {B} x {shape}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'method':55s} {'s / batch':>10s} {'vs naive':>9s} {'GiB':>6s}")
    for name, sec, gib in rows:
        print(f"{name:55s} {sec:10.2f} {naive / sec:8.1f}x {'' if gib is None else f'{gib:6.1f}'}")
    if args.convergence_rules:  # the inverse CDF's stopping rule, side by side
        from mstar_engine.families import special
        rules = {"three iterations (step < 1e-9 after the third)": (3, 1e-9),
                 "cubic rule (step < 2e-5 from the second)": (special.ICDF_CHECK_AFTER, special.ICDF_STEP_TOL)}
        print(f"\n{k} coupled steps at batch {B}, best of 2, by the inverse CDF's stopping rule:")
        for name, (after, tol) in rules.items():
            saved = special.ICDF_CHECK_AFTER, special.ICDF_STEP_TOL
            special.ICDF_CHECK_AFTER, special.ICDF_STEP_TOL = after, tol
            sec = timed(lambda: rollout(fam, x0, keep, rho=rho, generator=g), repeats=2)
            special.ICDF_CHECK_AFTER, special.ICDF_STEP_TOL = saved
            print(f"{name:55s} {sec:10.2f} s")
    if args.network_batch:
        step = network_step_seconds(args.network_batch) * B / args.network_batch
        print(f"\nCIFAR-10 U-Net preset (35.7 M parameters) training step, fp32, batch {args.network_batch} scaled to "
              f"{B}: {step:.2f} s")
        for name, sec in ((f"star-shaped tail (K = {kk})", star_k), (f"coupled roll-out (K = {kk})", coupled / kk)):
            print(f"{name:40s} {sec / (sec + step):6.1%} of a training step")


def network_step_seconds(batch: int, repeats: int = 2) -> float:
    """Seconds of one forward + backward + AdamW step of the CIFAR-10 preset U-Net on ``batch``
    images (the network part of a training step), best of ``repeats`` after one warm-up step."""
    from mstar_engine.networks.unet import build_unet
    net = build_unet(3, 3, 32, preset="cifar10-ddpm", dropout=0.1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 32, 32)
    t = torch.randint(1, 1000, (batch,)).float()

    def step():
        loss = net(x, t, None).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step()
    return timed(step, repeats)


if __name__ == "__main__":
    main()
