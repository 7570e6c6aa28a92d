"""Benchmark: training-input construction for Beta diffusion on CIFAR-sized batches.

Compares, in one process on the same machine:

* naive   — the published implementation's method: for each example draw all T steps with
            ``torch.distributions.Beta`` (x0 tiled T times), mask the steps s < t and sum
            ν_s logit(x_s). Measured on a sub-batch (the full batch needs ~20 GiB) and scaled
            linearly to the batch, which is exact for this embarrassingly parallel loop.
* star    — mstar's star-shaped roll-out (``process.forward.rollout`` with ρ = 0): each example is
            simulated only from T down to its own t.
* coupled — mstar's coupled roll-out (ρ_t from the ddpm rule), which must run the noise maps
            at every step, amortised over K training steps t per roll-out. Two Beta noise maps:
            the bijection x = F⁻¹_Beta(Φ(ξ)) (one normal per coordinate, the family's map since
            issue #14; the roll-out carries ξ, so each step is one inverse CDF) and, as the
            reference, the former two-Gamma map (two normals per coordinate, x = G_a/(G_a + G_b);
            its inverse draws an auxiliary total, so each step inverts x_t and draws x_{t-1}).
            The cost of a step depends on ν_t (the continued fraction of the incomplete beta needs
            O(ν^{1/3}) terms), so single steps are timed at a spread of t (--sample-steps) and the
            roll-out is their piecewise-linear interpolation summed over t = 1..T; a digits-sized
            roll-out (--digits-batch x 64 coordinates, T = 64) is also timed whole, with the Beta map
            on scipy (the CPU default) and on the torch numerics that accelerators run, and so is a
            quick-start-sized Dirichlet map (--small-batch points of the 3-simplex).

Usage: python benchmarks/tail_construction.py [--batch 128] [--steps 1000] [--naive-batch 2]
                                             [--network-batch 8] [--convergence-rules]
                                             [--threads 1 --cpu-time]   (on a shared machine)
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from mstar_engine.families.beta import Beta
from mstar_engine.families.dirichlet import Dirichlet
from mstar_engine.numerics import beta_map
from mstar_engine.numerics.special import gamma_log_icdf_normal, normal_from_gamma_log, open_unit
from mstar_engine.process.forward import rollout
from mstar_engine.process.kernel import coupled_step
from mstar_engine.schedules import build_coupling, build_schedule, gaussian_equivalent_snr


class TwoGammaBeta(Beta):
    """The former Beta noise map, kept as the reference: two normals per coordinate become
    G_a ~ Gamma(α), G_b ~ Gamma(β) by the Gamma inverse CDF and x = G_a / (G_a + G_b); the inverse
    draws the lost total S ~ Gamma(α + β) and inverts G_a = x S, G_b = (1 − x) S."""

    inverse_uses_aux = True

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (*self.event_shape, 2)

    def from_noise(self, xi, x0, t):
        a, b, _ = self._params(x0, t)
        xi = xi.to(a.dtype)
        log_ga = gamma_log_icdf_normal(xi[..., 0], a)
        log_gb = gamma_log_icdf_normal(xi[..., 1], b)
        return open_unit(torch.sigmoid(log_ga - log_gb).to(x0.dtype))

    def to_noise(self, x, x0, t, generator=None):
        a, b, _ = self._params(x0, t)
        out_dtype, x = x.dtype, x.to(a.dtype)
        log_s = torch.log(torch._standard_gamma(a + b, generator=generator))
        xi_a = normal_from_gamma_log(torch.log(x) + log_s, a)
        xi_b = normal_from_gamma_log(torch.log1p(-x) + log_s, b)
        return torch.stack([xi_a, xi_b], dim=-1).to(out_dtype)


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


CLOCK = time.perf_counter  # --cpu-time: time.process_time (this process's CPU seconds; robust to other load)


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = CLOCK()
        fn()
        best = min(best, CLOCK() - start)
    return best


def step_seconds(fam: Beta, x0: torch.Tensor, step: int, r: float, g: torch.Generator) -> float:
    """Seconds of one coupled roll-out step x_{step+1} → x_step (ρ = r), as ``rollout`` runs it:
    a bijective map carries ξ (one inverse CDF), an auxiliary-variable map inverts x_{step+1} first."""
    if fam.inverse_uses_aux:
        x = fam.sample(x0, step + 1, g)
        return timed(lambda: fam.stat(coupled_step(fam, x, x0, step + 1, r, g), step))
    xi = torch.randn((x0.shape[0], *fam.noise_shape), generator=g, dtype=x0.dtype)

    def one():
        eps = torch.randn(xi.shape, generator=g, dtype=x0.dtype)
        fam.stat(fam.from_noise(r * xi + (1 - r * r) ** 0.5 * eps, x0, step), step)
    return timed(one)


def interpolated_rollout(fam: Beta, x0: torch.Tensor, rho: torch.Tensor, at: list[int], g) -> tuple[float, dict]:
    """A coupled roll-out's seconds from single steps timed at ``at``: the step times interpolated
    linearly in t and summed over t = 1..T (ρ_{t+1} couples x_{t+1} → x_t; the top step is fresh)."""
    T = fam.steps
    at = sorted({min(max(1, t), T - 1) for t in at})
    per = {t: step_seconds(fam, x0, t, float(rho[t + 1]), g) for t in at}
    return float(np.interp(np.arange(1, T + 1), at, [per[t] for t in at]).sum()), per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--naive-batch", type=int, default=2)
    parser.add_argument("--sample-steps", default="1,2,3,5,10,20,50,100,200,500,999",
                        help="steps t at which single coupled steps are timed (CIFAR-sized roll-out)")
    parser.add_argument("--per-rollout", type=int, default=8, help="training steps t per coupled roll-out")
    parser.add_argument("--digits-batch", type=int, default=128, help="digits-sized roll-out: this many x 64 "
                        "coordinates, T = 64 (0: skip)")
    parser.add_argument("--small-batch", type=int, default=256, help="time a Dirichlet from_noise on this many "
                        "3-simplex points with each Beta-map backend (0: skip)")
    parser.add_argument("--network-batch", type=int, default=0, help="also time the CIFAR U-Net training step on "
                        "this many images (scaled to --batch) and report each roll-out as a fraction of a step")
    parser.add_argument("--convergence-rules", action="store_true", help="also time coupled steps of the two-Gamma "
                        "reference map with the Gamma inverse CDF's former stopping rule beside the current one")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--cpu-time", action="store_true", help="report CPU seconds of this process instead of "
                        "wall-clock seconds (use with --threads 1 on a shared machine)")
    args = parser.parse_args()
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK = time.process_time
    torch.manual_seed(0)
    shape = (3, 32, 32)
    T, B = args.steps, args.batch
    nu = build_schedule("beta-cosine", T)["nu"]
    fam, old = Beta(shape, nu=nu), TwoGammaBeta(shape, nu=nu)
    x0 = torch.rand(B, *shape).clamp(0.01, 0.99)
    t = torch.randint(1, T + 1, (B,))
    g = torch.Generator().manual_seed(0)
    kk = args.per_rollout

    nb = args.naive_batch
    naive = timed(lambda: naive_tail(nu, x0[:nb], t[:nb])) * B / nb
    naive_bytes = T * B * int(torch.tensor(shape).prod()) * 4 * 4  # draws, (α, β), masked product, float32
    star = timed(lambda: rollout(fam, x0, t, generator=g))
    star_k = timed(lambda: rollout(fam, x0, torch.randint(1, T + 1, (B, kk)), generator=g)) / kk
    rho = build_coupling("ddpm", T, snr=gaussian_equivalent_snr("beta-cosine", T))
    at = [int(v) for v in args.sample_steps.split(",")]
    x64 = x0.double()
    coupled_new, per_new = interpolated_rollout(fam, x64, rho, at, g)
    coupled_old, per_old = interpolated_rollout(old, x64, rho, at, g)

    rows = [
        ("naive full tail (torch Beta, all T draws)", naive, naive_bytes / 2**30),
        ("star-shaped tail (mstar rollout, rho = 0)", star, None),
        (f"star-shaped tail per training step (K = {kk})", star_k, None),
        ("coupled roll-out, Beta map F^-1(Phi(xi)), per roll-out", coupled_new, None),
        (f"coupled roll-out, Beta map, per training step (K = {kk})", coupled_new / kk, None),
        ("coupled roll-out, two-Gamma map (reference), per roll-out", coupled_old, None),
        (f"coupled roll-out, two-Gamma map, per training step (K = {kk})", coupled_old / kk, None),
    ]
    print(f"Beta, T = {T}, batch {B} x {shape}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {'CPU' if args.cpu_time else 'wall'} seconds")
    print(f"{'method':62s} {'s / batch':>10s} {'vs naive':>9s} {'GiB':>6s}")
    for name, sec, gib in rows:
        print(f"{name:62s} {sec:10.2f} {naive / sec:8.1f}x {'' if gib is None else f'{gib:6.1f}'}")
    print("\none coupled step (s) by t, from which the roll-outs above are interpolated (nu_t; Beta map / two-Gamma):")
    for step in per_new:
        print(f"  t = {step:4d}  nu = {float(nu[step]):9.3g}   {per_new[step]:6.3f}   {per_old[step]:6.3f}")
    digits = None
    if args.digits_batch:
        d_nu = build_schedule("beta-cosine", 64)["nu"]
        d_x0 = torch.rand(args.digits_batch, 64, dtype=torch.float64).clamp(0.01, 0.99)
        d_rho = build_coupling("ddpm", 64, snr=gaussian_equivalent_snr("beta-cosine", 64))
        ones = torch.ones(args.digits_batch, dtype=torch.long)
        digits = {}
        maps = (("Beta map", Beta((64,), nu=d_nu), "scipy"), ("Beta map, torch numerics", Beta((64,), nu=d_nu), "torch"),
                ("two-Gamma map", TwoGammaBeta((64,), nu=d_nu), "scipy"))
        for name, f, backend in maps:
            beta_map.CPU_BACKEND = backend
            whole = timed(lambda: rollout(f, d_x0, ones, rho=d_rho, generator=g), repeats=2)
            est, _ = interpolated_rollout(f, d_x0, d_rho, [1, 2, 3, 5, 10, 20, 40, 63], g)
            digits[name] = whole
            print(f"{'' if len(digits) > 1 else chr(10)}digits-sized coupled roll-out ({args.digits_batch} x 64, "
                  f"T = 64), {name}: {whole:.3f} s whole (interpolated from 8 timed steps: {est:.3f} s)")
        beta_map.CPU_BACKEND = "scipy"
    if args.small_batch:  # the quick start's size: per-op overhead, not arithmetic, decides
        print(f"\nDirichlet from_noise on {args.small_batch} points of the 3-simplex (2 sticks), T = 64, t = 32:")
        fam3 = Dirichlet((3,), **build_schedule("dirichlet-exp", 64))
        s_x0 = torch.distributions.Dirichlet(torch.ones(3)).sample((args.small_batch,)).double()
        s_xi = torch.randn(args.small_batch, 2, dtype=torch.float64, generator=g)
        for backend in ("torch", "scipy"):
            beta_map.CPU_BACKEND = backend
            sec = timed(lambda: [fam3.from_noise(s_xi, s_x0, 32) for _ in range(20)], repeats=3) / 20
            print(f"  {'scipy.special (the CPU default)' if backend == 'scipy' else 'torch numerics (accelerators)':34s}"
                  f" {sec * 1e3:7.2f} ms")
        beta_map.CPU_BACKEND = "scipy"
    if args.convergence_rules:  # the Gamma inverse CDF's stopping rule, on the two-Gamma reference map
        from mstar_engine.numerics import special
        rules = {"three iterations (step < 1e-9 after the third)": (3, 1e-9),
                 "cubic rule (step < 2e-5 from the second)": (special.ICDF_CHECK_AFTER, special.ICDF_STEP_TOL)}
        print(f"\ntwo-Gamma reference map, coupled steps at t = {at}, by the Gamma inverse CDF's stopping rule:")
        for name, (after, tol) in rules.items():
            saved = special.ICDF_CHECK_AFTER, special.ICDF_STEP_TOL
            special.ICDF_CHECK_AFTER, special.ICDF_STEP_TOL = after, tol
            sec = interpolated_rollout(old, x64, rho, at, g)[0]
            special.ICDF_CHECK_AFTER, special.ICDF_STEP_TOL = saved
            print(f"{name:55s} {sec:10.2f} s per roll-out")
    if args.network_batch:
        step = network_step_seconds(args.network_batch) * B / args.network_batch
        print(f"\nCIFAR-10 U-Net preset (35.7 M parameters) training step, fp32, batch {args.network_batch} scaled to "
              f"{B}: {step:.2f} s")
        fractions = [(f"star-shaped tail (K = {kk})", star_k), (f"coupled, Beta map (K = {kk})", coupled_new / kk),
                     (f"coupled, two-Gamma map (K = {kk})", coupled_old / kk)]
        if digits:
            fractions += [(f"digits coupled, {name} (K = {kk})", sec / kk) for name, sec in digits.items()]
        for name, sec in fractions:
            print(f"{name:45s} {sec / (sec + step):6.1%} of a training step")


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
