"""Oracles for the Bessel and geodesic-angle numerics (:mod:`mstar_engine.numerics.bessel`,
:mod:`mstar_engine.numerics.geodesic`) against scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from mstar_engine.numerics.bessel import bessel_ratio, log_bessel_iv, log_vmf_normalizer
from mstar_engine.numerics.geodesic import (GeodesicAngleCDF, SphereAngle3, SphereDirection, UniformAngle,
                                            angle_from_normal, normal_from_angle, normal_from_signed_angle,
                                            signed_angle_from_normal)

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


def test_uniform_sphere_polar_angles_match_the_incomplete_beta():
    """κ = 0 rows with one dimension per row: the polar angles of the uniform law on a sphere,
    density ∝ sin^k φ, whose tail beyond the nearer end is ½ I_{sin²}((k+1)/2, ½) (scipy oracle):
    1e-8 relative in either tail down to 1e-25 (below it the tables continue as power laws)."""
    ks = np.arange(1, 31)
    table = GeodesicAngleCDF(np.zeros(len(ks)), ks + 2)
    phi = torch.tensor([1e-3, 0.01, 0.1, 0.5, 1.0, 1.5, 1.6, 2.0, 3.0, 3.1, 3.14], dtype=F64)
    for row, k in enumerate(ks):
        lower, log_tail = table.tail(phi, math.pi - phi, torch.full((len(phi),), row))
        assert torch.equal(lower, phi <= math.pi / 2)
        ref = 0.5 * special.betainc((k + 1) / 2, 0.5, np.sin(np.minimum(phi.numpy(), math.pi - phi.numpy())) ** 2)
        keep = ref > 1e-25
        np.testing.assert_allclose(np.exp(log_tail.numpy()[keep]), ref[keep], rtol=1e-8, atol=0)


@pytest.mark.parametrize("law", ["table", "closed", "uniform"])
def test_normal_angle_maps_are_exact_inverses_and_continuous_at_the_median(law):
    """ξ → angle → ξ to rounding out to |ξ| = 30 (θ and ψ each carried at full relative precision;
    the upper table is shifted so that the halves meet at the median), one-sided and signed."""
    kappa = torch.tensor([1e-3, 0.7, 40.0, 1e4], dtype=F64)
    cdf = {"table": GeodesicAngleCDF(kappa, 5), "closed": SphereAngle3(kappa), "uniform": UniformAngle}[law]
    xi = torch.cat([torch.linspace(-30, 30, 241, dtype=F64), torch.tensor([-1e-12, 0.0, 1e-12], dtype=F64)])
    for row in range(4):
        rows = torch.full(xi.shape, row)
        theta, psi = angle_from_normal(cdf, xi, rows)
        torch.testing.assert_close(theta + psi, torch.full_like(theta, math.pi), rtol=1e-15, atol=0)
        torch.testing.assert_close(normal_from_angle(cdf, theta, psi, rows), xi, rtol=1e-12, atol=1e-12)
        mid = theta[-3:]  # ξ = ∓1e-12 straddle the median: continuous there
        assert (mid.max() - mid.min()).item() < 1e-10
        if law != "closed":
            a, b = signed_angle_from_normal(cdf, xi, rows)
            back = torch.sign(xi) * normal_from_signed_angle(cdf, a, b, rows)
            torch.testing.assert_close(back, xi, rtol=1e-12, atol=1e-12)


def test_von_mises_table_tail_is_exact_past_u_20():
    """log(1 + e^u) in full precision beyond u = 20 (ψ < 2e-9): torch's softplus returns u there,
    which had cost 2e-9 in log S."""
    table = GeodesicAngleCDF(torch.tensor([1e-3], dtype=F64), 2)
    xi = torch.tensor([6.0, 7.0, 8.0], dtype=F64)
    rows = torch.zeros(3, dtype=torch.long)
    a, b = signed_angle_from_normal(table, xi, rows)
    assert (b < 1e-8).all()
    torch.testing.assert_close(normal_from_signed_angle(table, a, b, rows), xi, rtol=1e-14, atol=0)


@pytest.mark.parametrize("m", [1, 2, 3, 6, 20])
def test_sphere_direction_is_uniform_and_bijective(m):
    """v ∈ S^m from m normals: unit norm, uniform (KS of two coordinates against normalised
    Gaussians, p > 1e-4), exact inverse, and the inverse of normalised Gaussians is N(0, I) per
    coordinate; tiny components (products of many sines) survive through hypot."""
    sd = SphereDirection(m)
    g = torch.Generator().manual_seed(m)
    n = 8000
    xi = torch.randn(n, m, generator=g, dtype=F64)
    v = sd.from_normals(xi)
    assert v.shape == (n, m + 1) and ((v.norm(dim=1) - 1).abs() < 1e-14).all()
    torch.testing.assert_close(sd.to_normals(v), xi, rtol=0, atol=1e-12)
    ref = torch.randn(n, m + 1, generator=g, dtype=F64)
    ref = ref / ref.norm(dim=1, keepdim=True)
    for j in (0, m):
        assert stats.ks_2samp(v[:, j].numpy(), ref[:, j].numpy()).pvalue > 1e-4
    z = sd.to_normals(ref * 3.7).numpy()  # only the direction matters
    assert min(stats.kstest(z[:, j], "norm").pvalue for j in range(m)) > 1e-4 / m
    far = torch.full((2, m), 8.0, dtype=F64)  # x stays representable: products of sines ≥ ~1e-300
    far[1, :-1], far[:, -1] = -12.0, torch.tensor([25.0, -25.0], dtype=F64)
    torch.testing.assert_close(sd.to_normals(sd.from_normals(far)), far, rtol=1e-12, atol=1e-12)
