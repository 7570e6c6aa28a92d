"""Samplers with an exact denoiser: is a miss in the NFE table the network's or the sampler's?

The data is an empirical distribution of K atoms (K points of a family's synthetic set), for which
the posterior over x0 is exact, so every sampler can be run with the best x̂0 it could ever get:

| sampler           | process (``specs/<family>.toml``, T = 64)       | x̂0 at step t (exact)                          |
|-------------------|-------------------------------------------------|-----------------------------------------------|
| star-shaped       | coupling independent, its default schedule, ρ=0 | E[x0 | x_T, …, x_t] from the tail statistic:   |
|                   |                                                 | log w_k = <f(x0_k), s_t> − Σ_{u≥t} Ω_u(x0_k)   |
| M-Star ddpm, path | coupling ddpm, its default schedule, ddpm ρ_t    | E[x0 | the coupled path]: q_T times the copula |
|                   |                                                 | kernel densities (an ideal tail+state network) |
| M-Star ddpm       | the same process                                | E[x0 | x_t]: log w_k = log q_t(x_t | x0_k)     |
| M-Star ρ = 1      | the same process, ρ = 1 (deterministic)         | E[x0 | x_t]                                    |

x̂0 is the posterior mean (``--x0 mean``, the x0-mse optimum), mapped onto the domain by
``family.project``, or (``--x0 kl``, Beta) the optimum of the rescaled KL the networks train on,
argmin Σ_k w_k KL(q_{t−1}(· | x0_k) ‖ q_{t−1}(· | x̂)); the two agree for the Gaussian. Between grid points the block rule reuses x̂0, as in ``sampling.sample``.
Score: energy distance between n samples (mapped into the domain as in ``nfe.py``) and the K
atoms, beside its floor (n draws of the atoms against the atoms), mean ± sd over sampler seeds.

The Gaussian rows check the harness: with the exact x̂0, DDIM (ρ = 1) is the probability-flow
ODE's discretisation and approaches the data as the NFE grows.

Usage:
    python benchmarks/oracle_sampler.py [--families beta dirichlet] [--atoms 64] [--samples 1000] [--seeds 3]
    python benchmarks/oracle_sampler.py --families beta --x0 kl

Appends to ``benchmarks/results/oracle_sampler.jsonl`` and prints one table per family.
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from mstar_engine.app.model import build_process
from mstar_engine.data.catalog import DATASETS as CATALOG
from mstar_engine.data.load import load_data
from mstar_engine.metrics.distances import METRIC_FUNCTIONS, drop_last_coordinate_if_simplex
from mstar_engine.rundir.records import append_jsonl
from mstar_engine.sampling.samplers import sample, step_grid
from mstar_engine.spec import load_spec
from mstar_engine.spec.resolve import resolve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nfe import FAMILY_SETS, ROOT, commit, project  # noqa: E402  (the table's domain maps and families)

SAMPLERS = {"star-shaped": ("independent", "tail"), "M-Star ddpm, path": ("ddpm", "path"),
            "M-Star ddpm": ("ddpm", "state"), "M-Star rho=1": ("ddpm", "state")}


def process_for(family: str, coupling: str, T: int):
    """The resolved spec of ``specs/<family>.toml`` with this coupling at T steps (its default schedule)."""
    return resolve(load_spec(ROOT / "specs" / f"{family}.toml",
                             [f"process.steps={T}", f"process.coupling.kind={coupling}", "process.inputs=auto",
                              "eval.metrics=[]", "compare={}"]).spec)


def atoms_of(spec, k: int) -> torch.Tensor:
    return load_data(spec.data, 0).train[:k].to(torch.float64)


class Oracle:
    """The exact posterior mean of x0 over the atoms, from the state (``markov``) or the tail."""

    def __init__(self, family, atoms: torch.Tensor, kl: bool = False) -> None:
        self.family, self.atoms, self.k, self.kl = family, atoms, atoms.shape[0], kl
        if kl and not (family.coordinatewise and bool(((atoms > 0) & (atoms < 1)).all())
                       and torch.equal(family.features(atoms), atoms)):
            raise SystemExit(f"--x0 kl: the bisection needs a coordinatewise family on (0, 1) with f(x0) = x0 "
                             f"(beta), not {family.name}")
        T = family.steps
        omega = torch.stack([family.log_normalizer(atoms, t).to(torch.float64) for t in range(1, T + 1)])  # (T, K)
        self.omega_tail = torch.zeros(T + 2, self.k, dtype=torch.float64)
        self.omega_tail[1:T + 1] = omega.flip(0).cumsum(0).flip(0)  # Σ_{u=t}^T Ω_u
        self.features = family.features(atoms).reshape(self.k, -1).to(torch.float64)

    def _mean(self, logw: torch.Tensor, t: int) -> torch.Tensor:
        w = torch.softmax(logw, dim=1)
        if self.kl:
            return self._kl_optimum(w, t)
        return self.family.project((w @ self.atoms.reshape(self.k, -1)).reshape(-1, *self.atoms.shape[1:]))

    def _grad_omega(self, x0: torch.Tensor, t: int) -> torch.Tensor:
        """∂Ω_t/∂x0 per coordinate (Ω sums over coordinates, so each coordinate's own derivative)."""
        with torch.enable_grad():  # the sampler runs under no_grad
            x = x0.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.family.log_normalizer(x, t).sum(), x)
        return g

    def _kl_optimum(self, w: torch.Tensor, t: int) -> torch.Tensor:
        """argmin over x̂ of Σ_k w_k KL(q_{t-1}(· | x0_k) ‖ q_{t-1}(· | x̂)), what the (rescaled) KL
        loss trains a network towards. With f(x0) = x0 the optimum matches the expected statistic,
        ∂Ω_{t-1}(x̂) = Σ_k w_k ∂Ω_{t-1}(x0_k), solved per coordinate by bisection on (0, 1)."""
        target = (w @ self._grad_omega(self.atoms, t - 1).reshape(self.k, -1)).reshape(-1, *self.atoms.shape[1:])
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = self._grad_omega(mid.clamp(1e-12, 1 - 1e-12), t - 1) > target
            hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
        return self.family.project((lo + hi) / 2)

    def markov(self, s, x, t):
        n = x.shape[0]
        xs = x.repeat_interleave(self.k, 0)
        x0 = self.atoms.repeat(n, *[1] * (x.dim() - 1))
        ts = t.repeat_interleave(self.k, 0)
        return self._mean(self.family.log_prob(xs, x0, ts).to(torch.float64).reshape(n, self.k), int(t[0]))

    def path(self, rho: torch.Tensor) -> "PathPosterior":
        return PathPosterior(self, rho)

    def tail(self, s, x, t):
        logw = s.reshape(s.shape[0], -1).to(torch.float64) @ self.features.T - self.omega_tail[int(t[0])]
        return self._mean(logw, int(t[0]))


class PathPosterior:
    """E[x0 | x_T, …, x_t] under the coupled chain x_T ~ q_T(· | x0), x_{s-1} ~ k_s(· | x_s, x0): the
    optimum of a network that reads the whole path (an ideal tail+state input). The kernel density
    is q_{s-1}(x_{s-1} | x0) times the Gaussian copula density of (ξ_s, ξ_{s-1}) at correlation ρ_s
    (MATH.md §2), which needs a deterministic ``to_noise`` (every continuous family)."""

    def __init__(self, oracle: Oracle, rho: torch.Tensor) -> None:
        self.o, self.rho, self.logw, self.prev_xi = oracle, rho, None, None

    def _expand(self, x, t):
        n, k = x.shape[0], self.o.k
        return (x.repeat_interleave(k, 0), self.o.atoms.repeat(n, *[1] * (x.dim() - 1)),
                torch.full((n * k,), int(t), dtype=torch.long))

    def denoise(self, s, x, t):
        if int(t[0]) == self.o.family.steps:  # a new chain starts: log q_T(x_T | x0_k)
            xs, x0, ts = self._expand(x, t[0])
            self.logw = self.o.family.log_prob(xs, x0, ts).to(torch.float64).reshape(x.shape[0], -1)
            self.prev_xi = self.o.family.to_noise(xs, x0, ts).to(torch.float64).flatten(1)
        return self.o._mean(self.logw, int(t[0]))

    def step(self, info: dict) -> None:
        """After each draw x_{t-1}: add log k_t(x_{t-1} | x_t, x0_k)."""
        t, x = info["t"], info["x"]
        if t == 1:
            return
        xs, x0, ts = self._expand(x, t - 1)
        xi = self.o.family.to_noise(xs, x0, ts).to(torch.float64).flatten(1)
        r = float(self.rho[t])
        a, b = self.prev_xi, xi
        copula = (-0.5 * math.log1p(-r * r) - (r * r * (a * a + b * b) - 2 * r * a * b) / (2 * (1 - r * r))).sum(1)
        self.logw = self.logw + (self.o.family.log_prob(xs, x0, ts).to(torch.float64) + copula).reshape(x.shape[0], -1)
        self.prev_xi = xi


def deterministic_noise_map(family, atoms: torch.Tensor) -> bool:
    """True when ``to_noise`` draws nothing (the copula density, and so the path posterior, exist)."""
    x = family.sample(atoms, 1, torch.Generator().manual_seed(0))
    one, two = (family.to_noise(x, atoms, 1, torch.Generator().manual_seed(s)) for s in (1, 2))
    return bool(torch.equal(one, two))


def energy(x: torch.Tensor, atoms: torch.Tensor, domain: str) -> float:
    flat = lambda z: drop_last_coordinate_if_simplex(z, domain == "simplex").flatten(1)  # noqa: E731
    return float(METRIC_FUNCTIONS["energy"](flat(project(x, domain)), flat(atoms)))


def run_family(a, family_name: str) -> list[dict]:
    rows = []
    for name, (coupling, _inputs) in SAMPLERS.items():
        spec = process_for(family_name, coupling, a.T)
        atoms = atoms_of(spec, a.atoms)
        process = build_process(spec.process, tuple(atoms.shape[1:]))
        family = process.family
        domain = CATALOG[spec.data.name].domain_for(spec.data.range)
        oracle = Oracle(family, atoms, kl=a.x0 == "kl")
        rho = torch.ones(a.T + 1, dtype=torch.float64) if name == "M-Star rho=1" else process.rho()
        path = oracle.path(rho)
        denoiser, callback = {"tail": (oracle.tail, None), "state": (oracle.markov, None),
                              "path": (path.denoise, path.step)}[SAMPLERS[name][1]]
        if callback is not None and not deterministic_noise_map(family, atoms):
            continue
        for nfe in a.nfe:
            scores, started = [], time.perf_counter()
            for seed in range(a.seeds):
                g = torch.Generator().manual_seed(seed)
                x = sample(denoiser, family, a.samples, step_grid(a.T, nfe), rho, generator=g, dtype=torch.float64,
                           final="x0", callback=callback)
                scores.append(energy(x, atoms, domain))
            rows.append({"family": family_name, "sampler": name, "nfe": nfe, "energy": scores, "x0": a.x0,
                         "schedule": spec.process.schedule.name, "coupling": coupling,
                         "seconds": round(time.perf_counter() - started, 1)})
    g = torch.Generator().manual_seed(99)
    floor = [energy(atoms[torch.randint(a.atoms, (a.samples,), generator=g)], atoms, domain) for _ in range(a.seeds)]
    for r in rows:
        r |= {"floor": float(np.mean(floor)), "atoms": a.atoms, "samples": a.samples, "T": a.T,
              "commit": commit(), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    return rows


def table(rows: list[dict], nfe: list[int]) -> str:
    out = []
    for sampler in SAMPLERS:
        by = {r["nfe"]: r["energy"] for r in rows if r["sampler"] == sampler}
        if not by:
            continue
        schedule = next(r["schedule"] for r in rows if r["sampler"] == sampler)
        out.append([f"{sampler} ({schedule})"] + [f"{np.mean(by[k]):.4g} ± {np.std(by[k], ddof=1) if len(by[k]) > 1 else 0:.2g}"
                                if k in by else "" for k in nfe])
    out.append(["floor (atoms vs atoms)"] + [f"{rows[0]['floor']:.4g}"] * len(nfe))
    return tabulate(out, headers=["sampler"] + [f"NFE {k}" for k in nfe], tablefmt="github")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=FAMILY_SETS, choices=FAMILY_SETS)
    p.add_argument("--atoms", type=int, default=64)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--T", type=int, default=64)
    p.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--x0", choices=("mean", "kl"), default="mean",
                   help="the exact x̂0: posterior mean (x0-mse optimum) or the KL optimum (beta only)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "oracle_sampler.jsonl")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    for f in a.families:
        rows = run_family(a, f)
        append_jsonl(a.out, rows)
        print(f"\n{f}: energy distance to the {a.atoms} atoms, exact x̂0, mean ± sd over {a.seeds} sampler seeds, "
              f"n = {a.samples}, T = {a.T}\n" + table(rows, a.nfe), flush=True)


if __name__ == "__main__":
    main()
