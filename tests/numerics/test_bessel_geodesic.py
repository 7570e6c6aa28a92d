"""Oracles for the Bessel and geodesic-angle numerics (:mod:`mstar_engine.numerics.bessel`,
:mod:`mstar_engine.numerics.geodesic`) against scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from mstar_engine.numerics.bessel import bessel_ratio, log_bessel_iv, log_vmf_normalizer
from mstar_engine.numerics.geodesic import GeodesicAngleCDF, SphereAngle3

F64 = torch.float64
KAPPAS = [1e-4, 1e-2, 0.5, 3.0, 30.0, 1e3, 1e5]


@pytest.mark.parametrize("nu", [1.0, 1.5, 2.0, 2.5, 8.0, 12.5])
def test_bessel_ratio_matches_scipy(nu):
    kappa = torch.logspace(-4, 5, 400, dtype=F64)
    ref = special.ive(nu, kappa.numpy()) / special.ive(nu - 1, kappa.numpy())
    np.testing.assert_allclose(bessel_ratio(nu, kappa).numpy(), ref, rtol=1e-12)


def test_bessel_ratio_d3_closed_form_and_limits():
    kappa = torch.logspace(-2, 3, 50, dtype=F64)
    torch.testing.assert_close(bessel_ratio(1.5, kappa), 1 / torch.tanh(kappa) - 1 / kappa, rtol=1e-11, atol=0)
    tiny = torch.tensor([1e-8], dtype=F64)
    torch.testing.assert_close(bessel_ratio(2.5, tiny), tiny / 5, rtol=1e-8, atol=0)  # A_d(κ) ≈ κ/d


@pytest.mark.parametrize("d", [2, 4, 5, 16])
def test_angle_table_normaliser_matches_bessel(d):
    """log ∫_0^π e^{κ(cos θ − 1)} sin^{d−2}θ dθ = log(√π Γ(ν+½) (2/κ)^ν I_ν(κ)) − κ, ν = (d − 2)/2."""
    kappa = np.array(KAPPAS)
    nu = (d - 2) / 2
    ref = 0.5 * math.log(math.pi) + special.gammaln(nu + 0.5) + nu * np.log(2 / kappa) + log_bessel_iv(nu, kappa) - kappa
    np.testing.assert_allclose(GeodesicAngleCDF(kappa, d).log_z, ref, rtol=0, atol=1e-9)


def test_log_vmf_normalizer_d3_closed_form():
    """C_3(κ) = κ / (4π sinh κ)."""
    kappa = np.array([1e-3, 0.5, 3.0, 30.0, 300.0])
    ref = np.log(kappa) - np.log(4 * math.pi) - (kappa + np.log1p(-np.exp(-2 * kappa)) - math.log(2))
    np.testing.assert_allclose(log_vmf_normalizer(3, kappa), ref, rtol=1e-12)


@pytest.mark.parametrize("d", [2, 5])
def test_angle_table_tails_match_quadrature(d):
    """log G (lower half) and log S (upper half) of the tables against scipy quadrature."""
    kappa = np.array([0.5, 30.0])
    table = GeodesicAngleCDF(kappa, d)
    theta = torch.tensor([0.05, 0.3, 1.0, 2.0, 3.0], dtype=F64)
    for row, k in enumerate(kappa):
        f = lambda th: math.exp(-2 * k * math.sin(th / 2) ** 2) * math.sin(th) ** (d - 2)
        total = integrate.quad(f, 0, math.pi, epsabs=0, epsrel=1e-12, limit=200)[0]
        rows = torch.full((len(theta),), row)
        lower, log_tail = table.tail(theta, math.pi - theta, rows)
        for th, low, lt in zip(theta.tolist(), lower.tolist(), log_tail.tolist()):
            ref = integrate.quad(f, *((0, th) if low else (th, math.pi)), epsabs=0, epsrel=1e-12, limit=200)[0] / total
            if ref > 1e-300:
                assert abs(math.exp(lt) - ref) <= 1e-7 * ref, (k, th, low, math.exp(lt), ref)


def test_sphere_angle_closed_form_agrees_with_the_table():
    kappa = torch.tensor([0.1, 3.0, 300.0], dtype=F64)
    closed, table = SphereAngle3(kappa), GeodesicAngleCDF(kappa, 3)
    theta = torch.linspace(0.01, 3.1, 40, dtype=F64)
    for row in range(3):
        rows = torch.full((40,), row)
        (l1, t1), (l2, t2) = closed.tail(theta, math.pi - theta, rows), table.tail(theta, math.pi - theta, rows)
        same = (l1 == l2) & (t1 > -300)  # the tables stop where a tail falls below ~e^{-800}
        torch.testing.assert_close(t1[same], t2[same], rtol=1e-6, atol=1e-12)
        back, _ = closed.angle(l1, t1, rows)
        torch.testing.assert_close(back, theta, rtol=1e-9, atol=1e-12)
