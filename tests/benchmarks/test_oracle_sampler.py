"""``benchmarks/oracle_sampler.py``: its exact denoisers against independent computations."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch
from scipy.optimize import minimize_scalar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
oracle_sampler = pytest.importorskip("oracle_sampler")

from mstar_engine.app.model import build_process  # noqa: E402


def family_and_atoms(name: str, coupling: str, k: int, event=None):
    spec = oracle_sampler.process_for(name, coupling, 16)
    atoms = oracle_sampler.atoms_of(spec, k)
    family = build_process(spec.process, event or tuple(atoms.shape[1:])).family
    return spec, family, atoms


def test_tail_posterior_equals_the_product_of_the_path_likelihoods():
    """log w_k = <f(x0_k), s_t> − Σ Ω_u(x0_k) against Σ_u log q_u(x_u | x0_k) summed directly."""
    _, family, atoms = family_and_atoms("beta", "independent", 8)
    oracle = oracle_sampler.Oracle(family, atoms)
    g = torch.Generator().manual_seed(0)
    x0 = atoms[3:4].expand(5, -1)
    path = {u: family.sample(x0, u, g).to(torch.float64) for u in range(16, 9, -1)}  # x_16 .. x_10
    s = sum(family.stat(x, u) for u, x in path.items())
    got = oracle.tail(s, path[10], torch.full((5,), 10))
    loglik = torch.stack([sum(family.log_prob(x, atoms[k:k + 1].expand(5, -1), u) for u, x in path.items())
                          for k in range(8)], 1)
    want = torch.softmax(loglik, 1) @ atoms
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_kl_optimum_minimises_the_expected_kl():
    _, family, atoms = family_and_atoms("beta", "ddpm", 12)
    _, one, _ = family_and_atoms("beta", "ddpm", 12, event=(1,))
    oracle = oracle_sampler.Oracle(family, atoms, kl=True)
    w = torch.softmax(2 * torch.randn(3, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1)
    for t in (2, 9, 16):
        got = oracle._kl_optimum(w, t)
        for i in range(3):
            for j in range(atoms.shape[1]):
                def expected_kl(x, i=i, j=j, t=t):
                    return float((w[i] * one.kl(atoms[:, j:j + 1], torch.full((12, 1), x, dtype=torch.float64),
                                                t - 1)).sum())
                best = minimize_scalar(expected_kl, bounds=(1e-9, 1 - 1e-9), method="bounded",
                                       options={"xatol": 1e-12}).x
                assert abs(float(got[i, j]) - best) < 1e-6


def test_the_kl_optimum_is_refused_where_the_bisection_does_not_apply():
    _, family, atoms = family_and_atoms("gaussian", "ddpm", 4)
    with pytest.raises(SystemExit, match="beta"):
        oracle_sampler.Oracle(family, atoms, kl=True)


def test_gaussian_star_shaped_and_ddpm_chains_coincide_with_exact_denoisers(tmp_path):
    """SS-DDPM's Gaussian case is DDPM: with exact denoisers the two samplers give the same law
    (here, with the same random numbers, the same samples); ρ = 1 (DDIM) differs."""
    rows = oracle_sampler.run_family(argparse.Namespace(T=16, atoms=8, samples=50, seeds=1, nfe=[4, 16], x0="mean"),
                                     "gaussian")
    by = {(r["sampler"], r["nfe"]): r["energy"][0] for r in rows}
    for nfe in (4, 16):
        assert by[("star-shaped", nfe)] == pytest.approx(by[("M-Star ddpm", nfe)], rel=1e-9)
        assert by[("M-Star ddpm, path", nfe)] == pytest.approx(by[("M-Star ddpm", nfe)], rel=1e-9)
    assert by[("M-Star rho=1", 16)] != pytest.approx(by[("M-Star ddpm", 16)], rel=1e-6)
