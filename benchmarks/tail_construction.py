"""Benchmark: training-input construction (the forward roll-out) on CIFAR-sized batches, every family.

Default output — the every-family table (issue #17): for each registered family (``--families``),
the forward roll-out ``process.forward.rollout(family, x0, keep, rho=rho, generator=g)`` with
K = ``--per-rollout`` steps t per example (``keep`` of shape (B, K), uniform in 1..T), T = ``--steps``,
float32 x0 (as in training), star-shaped (ρ = 0, the family's schedule for the independent
coupling) and coupled (ρ_t from the ddpm rule on the schedule's Gaussian-equivalent SNR, the
schedule for that coupling), each built as a spec's ``[process]`` table is built
(``app.model.build_process``; the Gaussian's schedule is ss-cosine star-shaped and cosine coupled,
every other family has one default schedule). Reported per roll-out, per training step (÷ K), and as
the share r / (r + u) of a training step, u being the CIFAR-10 preset U-Net's fp32 forward +
backward + AdamW step at the same batch (``network_step_seconds``: timed on --network-batch images
and scaled linearly to --batch).

Data per example: 3,072 numbers (a CIFAR-10 image), in the family's own event shape (FAMILY_DATA):
images (3, 32, 32) for the Gaussian, Beta and Gamma, 3,072 angles for von Mises, 1,024 points of
the 3-simplex (event (1024, 3)) for the Dirichlet; the vMF and the Wishart take one point per event,
so an example is 1,024 points of S² (rows of shape (3,)) or 768 SPD 2×2 matrices, and the batch
holds B × 1,024 or B × 768 rows (each row with its own K steps t); the categorical family takes
114 positions of 27 classes (text8-like one-hot, 3,078 numbers; its times are scaled by
3,072 / 3,078). ``--shape FAMILY=AxB`` replaces a family's event shape (B events, no scaling).

How a roll-out is timed: single steps x_{t+1} → x_t are timed at the steps ``--sample-steps``
(the loop body of ``rollout``: fresh noise, the noise map, the tail-statistic update), interpolated
linearly over t = 1..T and weighted by the fraction of examples still being simulated at t (an
example runs from T down to its lowest kept step). When that estimate is under ``--whole-limit``
seconds the real ``rollout`` is timed whole instead (column "how"), and both figures go to the JSON.

Former Beta sections (off by default; ``--beta-sections`` turns the first four on as before):

* ``--naive-batch N`` — the published implementation's method: for each example draw all T steps
  with ``torch.distributions.Beta`` (x0 tiled T times), mask the steps s < t and sum ν_s logit(x_s),
  on N examples scaled linearly to the batch (the full batch needs ~20 GiB), beside the star-shaped
  roll-out.
* ``--two-gamma`` — the coupled Beta roll-out with the bijection x = F⁻¹_Beta(Φ(ξ)) (one normal per
  coordinate, the family's map since issue #14; the roll-out carries ξ, so each step is one inverse
  CDF) beside the former two-Gamma map (two normals per coordinate, x = G_a/(G_a + G_b); its inverse
  draws an auxiliary total, so each step inverts x_t and draws x_{t-1}), in float64, every step
  counted for the whole batch (the issue #14 figures).
* ``--digits-batch N`` — a digits-sized roll-out (N x 64 coordinates, T = 64) timed whole, with
  the Beta map on scipy (the CPU default) and on the torch numerics that accelerators run.
* ``--small-batch N`` — a quick-start-sized Dirichlet map (N points of the 3-simplex).
* ``--convergence-rules`` — the two-Gamma map's coupled steps under the Gamma inverse CDF's former
  stopping rule beside the current one.

Usage: python benchmarks/tail_construction.py [--families gaussian,beta,...] [--batch 128] [--steps 1000]
                                             [--per-rollout 8] [--network-batch 8] [--json OUT]
                                             [--threads 1 --cpu-time]   (on a shared machine)
       python benchmarks/tail_construction.py --batch 2 --steps 20 --network-batch 1   (smoke size)
       python benchmarks/tail_construction.py --families none --beta-sections   (the former Beta tables)
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from mstar_engine.app.model import build_process
from mstar_engine.families import get as family_class
from mstar_engine.process.forward import rollout
from mstar_engine.process.kernel import coupled_step
from mstar_engine.schedules import build_coupling, build_schedule, gaussian_equivalent_snr
from mstar_engine.spec.schema import Coupling, Process, Schedule

ROOT = Path(__file__).resolve().parent.parent
NUMBERS = 3 * 32 * 32  # one CIFAR-10 image: the data per example every row is scaled to

#: family -> (event shape, events per example): 3,072 numbers per example in the family's own events.
FAMILY_DATA: dict[str, tuple[tuple[int, ...], int]] = {
    "gaussian": ((3, 32, 32), 1),
    "beta": ((3, 32, 32), 1),
    "gamma": ((3, 32, 32), 1),
    "dirichlet": ((1024, 3), 1),     # 1,024 points of the 3-simplex per event
    "vmf": ((3,), 1024),             # one point of S² per event (the family's event is (d,)): 1,024 rows per example
    "von-mises": ((3072,), 1),       # 3,072 angles
    "wishart": ((2, 2), 768),        # one SPD 2x2 matrix per event (square events only): 768 rows per example
    "categorical": ((114, 27), 1),   # 114 positions x 27 classes (text8), 3,078 numbers, scaled by 3,072 / 3,078
}
ALIASES = {"von_mises": "von-mises", "vonmises": "von-mises"}

CLOCK = time.perf_counter  # --cpu-time: time.process_time (this process's CPU seconds; robust to other load)


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = CLOCK()
        fn()
        best = min(best, CLOCK() - start)
    return best


# ----------------------------------------------------------------------------- every family
def family_process(name: str, coupling: str, T: int, event_shape: tuple[int, ...]):
    """The process a spec's ``[process]`` table with this family and coupling builds (its default
    schedule for that coupling, ``schedule.name = "auto"``), for data of ``event_shape``."""
    schedule = family_class(name).default_schedule(coupling)
    spec = Process(family=name, steps=T, schedule=Schedule(name=schedule), coupling=Coupling(kind=coupling),
                   inputs="tail" if coupling == "independent" else "tail+state")
    return build_process(spec, event_shape), schedule


def family_data(fam, rows: int, g: torch.Generator) -> torch.Tensor:
    """float32 x0 inside the family's domain: images in [-1, 1] (Gaussian) or [0.01, 0.99] (Beta, as
    the former Beta benchmark), prior draws for every other family."""
    if fam.name == "gaussian":
        x0 = torch.rand((rows, *fam.event_shape), generator=g) * 2 - 1
    elif fam.name == "beta":
        x0 = torch.rand((rows, *fam.event_shape), generator=g).clamp(0.01, 0.99)
    else:
        x0 = fam.prior_sample(rows, g, dtype=torch.float32).float()
    fam.check_domain(x0, "the benchmark's x0")
    return x0


def step_seconds(fam, x0: torch.Tensor, step: int, rho: torch.Tensor | None, g: torch.Generator) -> float:
    """Seconds of one step x_{step+1} → x_step of ``rollout`` over every row of x0 (its loop body):
    a fresh draw when ρ_{step+1} = 0 (star-shaped), else the coupled step, which for a bijective map
    carries ξ (fresh normals mixed with the previous ξ, one ``from_noise``) and for a map with
    auxiliary draws inverts x_{step+1} first (``coupled_step``); then the tail-statistic update."""
    rows = x0.shape[0]
    idx = torch.arange(rows)
    x = torch.empty_like(x0)
    s = x0.new_zeros((rows, *fam.stat_shape))
    r = None if rho is None or float(rho[step + 1]) == 0.0 else rho[step + 1]
    if r is None:
        def one():
            x_new = fam.sample(x0[idx], step, g)
            x[idx] = x_new
            s[idx] += fam.stat(x_new, step)
    elif not fam.inverse_uses_aux:
        xi = torch.randn((rows, *fam.noise_shape), generator=g, dtype=x0.dtype)
        r = r.to(x0.dtype)

        def one():
            eps = torch.randn((rows, *fam.noise_shape), generator=g, dtype=x0.dtype)
            eps = r * xi[idx] + torch.sqrt(1 - r * r) * eps
            xi[idx] = eps
            x_new = fam.from_noise(eps, x0[idx], step)
            x[idx] = x_new
            s[idx] += fam.stat(x_new, step)
    else:
        x.copy_(fam.sample(x0, step + 1, g))

        def one():
            x_new = coupled_step(fam, x[idx], x0[idx], step + 1, r, g)
            x[idx] = x_new
            s[idx] += fam.stat(x_new, step)
    return timed(one)


def sample_steps(spec: str, T: int) -> list[int]:
    """The steps t at which single steps are timed: ``spec``'s values clamped to 1..T − 1 (the top
    step T is fresh in every process and costs what the step below it does)."""
    return sorted({min(max(1, int(v)), max(1, T - 1)) for v in spec.split(",")})


def interpolated(per: dict[int, float], T: int, weight: np.ndarray | None = None) -> float:
    """Σ_{t=1..T} w_t · (the step seconds interpolated linearly in t); w_t = 1 without weights."""
    at = sorted(per)
    curve = np.interp(np.arange(1, T + 1), at, [per[t] for t in at])
    return float((curve if weight is None else curve * weight).sum())


def measure(fam, x0, keep, rho, at: list[int], g, whole_limit: float) -> dict:
    """One roll-out's seconds: single steps at ``at``, interpolated and weighted by the fraction of
    rows still simulated at each t; the real ``rollout`` timed whole when that estimate is under
    ``whole_limit`` seconds."""
    T = fam.steps
    active = (keep.min(dim=1).values[None, :] <= torch.arange(1, T + 1)[:, None]).double().mean(1).numpy()
    step_seconds(fam, x0, at[len(at) // 2], rho, g)  # warm-up: lazily built tables, first calls
    per = {t: step_seconds(fam, x0, t, rho, g) for t in at}
    estimate = interpolated(per, T, active)
    out = {"interpolated": estimate, "all_rows": interpolated(per, T), "per_step": per, "whole": None}
    if estimate < whole_limit:
        out["whole"] = timed(lambda: rollout(fam, x0, keep, rho=rho, generator=g))
    out["seconds"], out["how"] = (out["whole"], "whole") if out["whole"] is not None else (estimate, "interpolated")
    return out


def family_row(name: str, args, event_shape=None, per_example: int = 1, scale: float | None = None) -> dict:
    """The timings of one family (see the module docstring); seconds scaled to --batch x 3,072 numbers."""
    T, B, K = args.steps, args.batch, args.per_rollout
    if event_shape is None:
        event_shape, per_example = FAMILY_DATA[name]
    rows = B * per_example
    numbers = per_example * math.prod(event_shape)
    scale = NUMBERS / numbers if scale is None else scale
    g = torch.Generator().manual_seed(0)
    (star_p, star_schedule), (coupled_p, coupled_schedule) = (family_process(name, c, T, tuple(event_shape))
                                                              for c in ("independent", "ddpm"))
    x0 = family_data(coupled_p.family, rows, g)
    keep = torch.randint(1, T + 1, (rows, K), generator=g)
    at = sample_steps(args.sample_steps, T)
    star = measure(star_p.family, x0, keep, None, at, g, args.whole_limit)
    rho = coupled_p.rho()
    coupled = measure(coupled_p.family, x0, keep, rho, at, g, args.whole_limit)
    row = {"family": name, "schedule_star": star_schedule, "schedule_coupled": coupled_schedule,
           "coupling": coupled_p.coupling_kind, "event_shape": list(event_shape), "events_per_example": per_example,
           "rows": rows, "numbers_per_example": numbers, "scale": scale, "batch": B, "T": T, "K": K}
    for key, m in (("star", star), ("coupled", coupled)):
        row[f"{key}_s"] = m["seconds"] * scale
        row[f"{key}_how"] = m["how"]
        row[f"{key}_whole_s"] = None if m["whole"] is None else m["whole"] * scale
        row[f"{key}_interpolated_s"] = m["interpolated"] * scale
        row[f"{key}_all_rows_s"] = m["all_rows"] * scale
        row[f"{key}_step_s"] = {str(t): v * scale for t, v in m["per_step"].items()}
        row[f"{key}_per_train_step_s"] = row[f"{key}_s"] / K
    return row


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.partition("=")
    if not dims:
        raise argparse.ArgumentTypeError(f"--shape wants FAMILY=AxB..., got {text!r}")
    return ALIASES.get(name, name), tuple(int(d) for d in dims.lower().split("x"))


def family_names(text: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    if text.strip().lower() == "all":
        return list(FAMILY_DATA)
    names = [ALIASES.get(n.strip(), n.strip()) for n in text.split(",") if n.strip()]
    for n in names:
        family_class(n)  # an unknown name is a KeyError naming the known ones
    return names


def commit() -> str:
    """HEAD, with "-dirty" when the engine has uncommitted changes (they change what is timed)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mstar_engine"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def share(r: float, unet: float | None) -> float | None:
    return None if unet is None else r / (r + unet)


def print_table(rows: list[dict], K: int) -> None:
    pct = lambda v: "" if v is None else f"{v:.1%}"  # noqa: E731
    print(f"{'family':12s} {'event x rows (scale)':28s} {'star s':>9s} {'how':>5s} {'coupled s':>10s} {'how':>5s}"
          f" {'star/step':>10s} {'coup/step':>10s} {'star %':>7s} {'coup %':>7s}")
    for r in rows:
        shape = "x".join(map(str, r["event_shape"])) + f" x {r['rows']}" + \
            ("" if abs(r["scale"] - 1) < 1e-12 else f" ({r['scale']:.3g})")
        print(f"{r['family']:12s} {shape:28s} {r['star_s']:9.2f} {r['star_how'][:5]:>5s} {r['coupled_s']:10.2f}"
              f" {r['coupled_how'][:5]:>5s} {r['star_per_train_step_s']:10.3f} {r['coupled_per_train_step_s']:10.3f}"
              f" {pct(r['share_star']):>7s} {pct(r['share_coupled']):>7s}")
    print(f"(s: seconds per roll-out of K = {K} steps t per example; /step: per training step, ÷ K; %: share of a "
          f"training step r / (r + U-Net step); how: whole = the real rollout timed, inter = single steps "
          f"interpolated over t)")


# ----------------------------------------------------------------------------- the former Beta sections
def two_gamma_beta():
    """The former Beta noise map as a family class, kept as the reference: two normals per coordinate
    become G_a ~ Gamma(α), G_b ~ Gamma(β) by the Gamma inverse CDF and x = G_a / (G_a + G_b); the
    inverse draws the lost total S ~ Gamma(α + β) and inverts G_a = x S, G_b = (1 − x) S. (Imported
    here: only the --two-gamma and --convergence-rules sections use the engine's internals.)"""
    from mstar_engine.families.beta import Beta
    from mstar_engine.numerics.special import gamma_log_icdf_normal, normal_from_gamma_log, open_unit

    class TwoGammaBeta(Beta):
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

    return TwoGammaBeta


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


def interpolated_rollout(fam, x0: torch.Tensor, rho: torch.Tensor, at: list[int], g) -> tuple[float, dict]:
    """A coupled roll-out's seconds from single steps timed at ``at``, interpolated linearly in t and
    summed over t = 1..T with every row counted at every t (the issue #14 figures)."""
    at = sample_steps(",".join(map(str, at)), fam.steps)
    per = {t: step_seconds(fam, x0, t, rho, g) for t in at}
    return interpolated(per, fam.steps), per


def beta_sections(args, unet: float | None) -> None:
    """The former Beta tables: naive tail, star-shaped, Beta map vs two-Gamma map (float64), digits,
    quick-start Dirichlet map, convergence rules (each behind its flag)."""
    from mstar_engine.families.beta import Beta
    from mstar_engine.families.dirichlet import Dirichlet
    from mstar_engine.numerics import beta_map

    shape = (3, 32, 32)
    T, B, kk = args.steps, args.batch, args.per_rollout
    nu = build_schedule("beta-cosine", T)["nu"]
    fam = Beta(shape, nu=nu)
    TwoGammaBeta = two_gamma_beta() if args.two_gamma or args.convergence_rules else None
    old = TwoGammaBeta(shape, nu=nu) if TwoGammaBeta else None
    x0 = torch.rand(B, *shape).clamp(0.01, 0.99)
    t = torch.randint(1, T + 1, (B,))
    g = torch.Generator().manual_seed(0)
    rho = build_coupling("ddpm", T, snr=gaussian_equivalent_snr("beta-cosine", T))
    at = [int(v) for v in args.sample_steps.split(",")]
    x64 = x0.double()
    fractions = []
    if args.naive_batch or args.two_gamma:
        rows = []
        nb = args.naive_batch
        naive = timed(lambda: naive_tail(nu, x0[:nb], t[:nb])) * B / nb if nb else None
        naive_bytes = T * B * int(torch.tensor(shape).prod()) * 4 * 4  # draws, (α, β), masked product, float32
        star = timed(lambda: rollout(fam, x0, t, generator=g))
        star_k = timed(lambda: rollout(fam, x0, torch.randint(1, T + 1, (B, kk)), generator=g)) / kk
        if naive is not None:
            rows.append(("naive full tail (torch Beta, all T draws)", naive, naive_bytes / 2**30))
        rows += [("star-shaped tail (mstar rollout, rho = 0)", star, None),
                 (f"star-shaped tail per training step (K = {kk})", star_k, None)]
        fractions.append((f"star-shaped tail (K = {kk})", star_k))
        if args.two_gamma:
            coupled_new, per_new = interpolated_rollout(fam, x64, rho, at, g)
            coupled_old, per_old = interpolated_rollout(old, x64, rho, at, g)
            rows += [("coupled roll-out, Beta map F^-1(Phi(xi)), per roll-out", coupled_new, None),
                     (f"coupled roll-out, Beta map, per training step (K = {kk})", coupled_new / kk, None),
                     ("coupled roll-out, two-Gamma map (reference), per roll-out", coupled_old, None),
                     (f"coupled roll-out, two-Gamma map, per training step (K = {kk})", coupled_old / kk, None)]
            fractions += [(f"coupled, Beta map (K = {kk})", coupled_new / kk),
                          (f"coupled, two-Gamma map (K = {kk})", coupled_old / kk)]
        print(f"\nBeta, T = {T}, batch {B} x {shape}, {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
              f"{'CPU' if args.cpu_time else 'wall'} seconds")
        ref = naive if naive is not None else star
        print(f"{'method':62s} {'s / batch':>10s} {'vs ' + ('naive' if naive is not None else 'star'):>9s} {'GiB':>6s}")
        for name, sec, gib in rows:
            print(f"{name:62s} {sec:10.2f} {ref / sec:8.1f}x {'' if gib is None else f'{gib:6.1f}'}")
        if args.two_gamma:
            print("\none coupled step (s) by t, from which the roll-outs above are interpolated (nu_t; Beta map / "
                  "two-Gamma):")
            for step in per_new:
                print(f"  t = {step:4d}  nu = {float(nu[step]):9.3g}   {per_new[step]:6.3f}   {per_old[step]:6.3f}")
    if args.digits_batch:
        d_nu = build_schedule("beta-cosine", 64)["nu"]
        d_x0 = torch.rand(args.digits_batch, 64, dtype=torch.float64).clamp(0.01, 0.99)
        d_rho = build_coupling("ddpm", 64, snr=gaussian_equivalent_snr("beta-cosine", 64))
        ones = torch.ones(args.digits_batch, dtype=torch.long)
        digits = {}
        maps = [("Beta map", Beta((64,), nu=d_nu), "scipy"),
                ("Beta map, torch numerics", Beta((64,), nu=d_nu), "torch")]
        if TwoGammaBeta:
            maps.append(("two-Gamma map", TwoGammaBeta((64,), nu=d_nu), "scipy"))
        for name, f, backend in maps:
            beta_map.CPU_BACKEND = backend
            whole = timed(lambda: rollout(f, d_x0, ones, rho=d_rho, generator=g), repeats=2)
            est, _ = interpolated_rollout(f, d_x0, d_rho, [1, 2, 3, 5, 10, 20, 40, 63], g)
            digits[name] = whole
            print(f"{'' if len(digits) > 1 else chr(10)}digits-sized coupled roll-out ({args.digits_batch} x 64, "
                  f"T = 64), {name}: {whole:.3f} s whole (interpolated from 8 timed steps: {est:.3f} s)")
        beta_map.CPU_BACKEND = "scipy"
        fractions += [(f"digits coupled, {name} (K = {kk})", sec / kk) for name, sec in digits.items()]
    if args.small_batch:  # the quick start's size: per-op overhead, not arithmetic, decides
        print(f"\nDirichlet from_noise on {args.small_batch} points of the 3-simplex (2 sticks), T = 64, t = 32:")
        fam3 = Dirichlet((3,), **build_schedule("dirichlet-exp", 64))
        s_x0 = torch.distributions.Dirichlet(torch.ones(3)).sample((args.small_batch,)).double()
        s_xi = torch.randn(args.small_batch, 2, dtype=torch.float64, generator=g)
        for backend in ("torch", "scipy"):
            beta_map.CPU_BACKEND = backend
            sec = timed(lambda: [fam3.from_noise(s_xi, s_x0, 32) for _ in range(20)], repeats=3) / 20
            label = "scipy.special (the CPU default)" if backend == "scipy" else "torch numerics (accelerators)"
            print(f"  {label:34s} {sec * 1e3:7.2f} ms")
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
    if unet is not None and fractions:
        print()
        for name, sec in fractions:
            print(f"{name:45s} {sec / (sec + unet):6.1%} of a training step")


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="all", help="comma list of families for the every-family table "
                        f"(default all: {','.join(FAMILY_DATA)}; none: skip the table)")
    parser.add_argument("--batch", type=int, default=128, help="examples per training batch")
    parser.add_argument("--steps", type=int, default=1000, help="T")
    parser.add_argument("--per-rollout", type=int, default=8, help="training steps t per roll-out (K)")
    parser.add_argument("--sample-steps", default="1,2,3,5,10,20,50,100,200,300,400,500,600,700,800,900,950,999",
                        help="steps t at which single roll-out steps are timed (clamped to 1..T-1)")
    parser.add_argument("--whole-limit", type=float, default=20.0, help="time the real rollout whole when the "
                        "interpolated estimate is under this many seconds (0: never; inf: always)")
    parser.add_argument("--shape", type=parse_shape, action="append", default=[], metavar="FAMILY=AxB",
                        help="event shape of a family (--batch events, times not scaled); repeatable")
    parser.add_argument("--network-batch", type=int, default=8, help="time the CIFAR U-Net training step on this "
                        "many images, scaled to --batch (0: skip, and no shares)")
    parser.add_argument("--json", metavar="OUT", help="append one JSON line per family to OUT")
    parser.add_argument("--beta-sections", action="store_true", help="the former Beta tables: --naive-batch 2 "
                        "--two-gamma --digits-batch 128 --small-batch 256 unless given")
    parser.add_argument("--naive-batch", type=int, default=0, help="time the published naive Beta tail on this many "
                        "examples, scaled to --batch, beside the star-shaped Beta roll-out (0: skip)")
    parser.add_argument("--two-gamma", action="store_true", help="coupled Beta roll-out, Beta map beside the former "
                        "two-Gamma map (float64, every row at every t)")
    parser.add_argument("--digits-batch", type=int, default=0, help="digits-sized Beta roll-out: this many x 64 "
                        "coordinates, T = 64 (0: skip)")
    parser.add_argument("--small-batch", type=int, default=0, help="time a Dirichlet from_noise on this many "
                        "3-simplex points with each Beta-map backend (0: skip)")
    parser.add_argument("--convergence-rules", action="store_true", help="also time coupled steps of the two-Gamma "
                        "reference map with the Gamma inverse CDF's former stopping rule beside the current one")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--cpu-time", action="store_true", help="report CPU seconds of this process instead of "
                        "wall-clock seconds (use with --threads 1 on a shared machine)")
    args = parser.parse_args(argv)
    if args.beta_sections:
        args.naive_batch, args.two_gamma = args.naive_batch or 2, True
        args.digits_batch, args.small_batch = args.digits_batch or 128, args.small_batch or 256
    names = family_names(args.families)
    shapes = dict(args.shape)
    for name in names:
        if name not in FAMILY_DATA and name not in shapes:
            parser.error(f"family {name!r} has no default event shape here: give --shape {name}=AxB")
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, K = args.batch, args.per_rollout
    clock = "CPU" if args.cpu_time else "wall"
    print(f"Forward roll-outs, T = {args.steps}, K = {K} steps t per roll-out, batch {B} x {NUMBERS:,} numbers, "
          f"float32 x0; {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), torch "
          f"{torch.__version__}, {clock} seconds, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    unet = None
    if args.network_batch:
        unet = network_step_seconds(args.network_batch) * B / args.network_batch
        print(f"CIFAR-10 U-Net preset (35.7 M parameters) training step, fp32 forward + backward + AdamW, batch "
              f"{args.network_batch} scaled to {B}: {unet:.2f} s", flush=True)
    rows = []
    for name in names:
        started = time.perf_counter()
        if name in shapes:
            row = family_row(name, args, shapes[name], 1, 1.0)
        else:
            row = family_row(name, args)
        row.update(share_star=share(row["star_per_train_step_s"], unet),
                   share_coupled=share(row["coupled_per_train_step_s"], unet), unet_step_s=unet,
                   network_batch=args.network_batch, threads=torch.get_num_threads(), clock=clock,
                   machine=f"{platform.machine()}, {torch.get_num_threads()} thread(s)", torch=torch.__version__,
                   commit=commit(), date=time.strftime("%Y-%m-%d %H:%M"),
                   wall_s=round(time.perf_counter() - started, 1))
        rows.append(row)
        print(f"  {name}: star {row['star_s']:.2f} s ({row['star_how']}), coupled {row['coupled_s']:.2f} s "
              f"({row['coupled_how']}) per roll-out [{row['wall_s']:.0f} s wall]", flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    if rows:
        print()
        print_table(rows, K)
    if args.naive_batch or args.two_gamma or args.digits_batch or args.small_batch or args.convergence_rules:
        beta_sections(args, unet)
    return rows


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
