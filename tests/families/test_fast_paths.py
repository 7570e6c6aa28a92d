"""The cheaper coupled noise maps (issue #17) against the computations they replace.

* Wishart p = 2: the entry-by-entry Cholesky factor of V_t and Bartlett product against the batched
  LAPACK path (to rounding, ill-conditioned X0 included; NaN, not an exception, for a non-positive-
  definite X0; differentiable in ξ).
* Monotone Hermite tables (:mod:`mstar_engine.numerics.hermite`): the interval search against
  ``torch.searchsorted`` and the Newton inverse to rounding, on the von Mises tables of the
  von-mises-exp range.
* von Mises: the far normal tail of the signed-angle map (erfc, then log Φ past |ξ| = 37) against
  the log Φ formula, and the block-wise noise maps against one example at a time.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mstar_engine.families.von_mises import _BLOCK, VonMises, wrap_angle
from mstar_engine.families.wishart import Wishart
from mstar_engine.numerics import geodesic, hermite
from mstar_engine.numerics.geodesic import GeodesicAngleCDF, signed_angle_from_normal
from mstar_engine.numerics.special import gamma_log_icdf_normal

F64 = torch.float64


# ----------------------------------------------------------------------------- Wishart p = 2
def wishart2() -> Wishart:
    return Wishart((2, 2), df=torch.tensor([1.6, 5.0, 300.0, 2e4], dtype=F64),
                   xi=torch.tensor([0.0, 0.3, 0.999, 1.0], dtype=F64))


def spd_batch(n: int, g: torch.Generator) -> torch.Tensor:
    """Random rotations of eigenvalues 10^U(−6, 6): condition numbers up to 1e12."""
    angle = 2 * math.pi * torch.rand(n, generator=g, dtype=F64)
    q = torch.stack([torch.cos(angle), -torch.sin(angle), torch.sin(angle), torch.cos(angle)], 1).reshape(n, 2, 2)
    lam = 10.0 ** (12 * torch.rand((n, 2), generator=g, dtype=F64) - 6)
    x = q @ torch.diag_embed(lam) @ q.transpose(-1, -2)
    return 0.5 * (x + x.transpose(-1, -2))


def lapack_scale_chol(fam: Wishart, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cholesky(fam._mean(x0, fam._xi[t]) / fam._df[t][:, None, None])


def test_wishart_2x2_scale_factor_matches_lapack():
    fam = wishart2()
    g = torch.Generator().manual_seed(0)
    x0 = spd_batch(4000, g)
    t = torch.arange(4000) % 4
    ours, ref = fam._scale_chol(x0, t), lapack_scale_chol(fam, x0, t)
    # relative to the factor's scale; ill-conditioned X0 lose what any solve loses (cond · eps)
    scale = ref.abs().amax((-1, -2), keepdim=True)
    cond = torch.linalg.cond(x0)[:, None, None]
    assert ((ours - ref).abs() / scale <= 1e-15 * (1 + cond)).all()
    well = (cond[:, 0, 0] < 1e3)
    assert ((ours - ref).abs() / scale)[well].max() < 1e-13


def test_wishart_2x2_noise_map_matches_matrix_products():
    fam = wishart2()
    g = torch.Generator().manual_seed(1)
    x0 = spd_batch(2000, g)
    t = torch.arange(2000) % 4
    xi = torch.randn((2000, 3), generator=g, dtype=F64)
    x = fam.from_noise(xi, x0, t)
    a = fam._unpack(xi.clone())
    shapes = fam._shapes(t)
    chi2 = 2 * torch.exp(gamma_log_icdf_normal(xi[:, [0, 2]], shapes))
    a = torch.tril(a, -1) + torch.diag_embed(torch.sqrt(chi2))
    la = lapack_scale_chol(fam, x0, t) @ a
    ref = la @ la.transpose(-1, -2)
    scale = ref.abs().amax((-1, -2), keepdim=True)
    cond = torch.linalg.cond(x0)[:, None, None]
    assert ((x - ref).abs() / scale <= 1e-15 * (1 + cond)).all()
    assert torch.equal(x, x.transpose(-1, -2))  # symmetric by construction
    torch.testing.assert_close(fam.to_noise(x, x0, t)[cond[:, 0, 0] < 1e4], xi[cond[:, 0, 0] < 1e4],
                               rtol=1e-8, atol=1e-8)


def test_wishart_2x2_nan_for_a_non_positive_definite_x0_and_gradients():
    fam = wishart2()
    x0 = torch.tensor([[[1.0, 0.2], [0.2, 2.0]], [[1.0, 3.0], [3.0, 1.0]], [[-1.0, 0.0], [0.0, 2.0]]], dtype=F64)
    xi = torch.zeros((3, 3), dtype=F64)
    x = fam.from_noise(xi, x0, 1)
    assert torch.isfinite(x[0]).all() and torch.isnan(x[1:]).all()
    z = torch.randn((3, 3), generator=torch.Generator().manual_seed(2), dtype=F64).requires_grad_()
    good = x0[:1].expand(3, 2, 2)
    assert torch.autograd.gradcheck(lambda v: fam.from_noise(v, good, 2), (z,), eps=1e-6, atol=1e-6, rtol=1e-4)


# ----------------------------------------------------------------------------- Hermite tables
@pytest.mark.parametrize("nodes", [2048, 1000, 2050])
def test_hermite_search_matches_searchsorted(nodes):
    g = torch.Generator().manual_seed(nodes)
    rows = 5
    Y = torch.cumsum(torch.rand((rows, nodes), generator=g, dtype=F64) ** 3, 1)  # increasing, uneven
    Y[:, 10:20] = Y[:, 10:11]  # a flat stretch (ties)
    r = torch.randint(0, rows, (20000,), generator=g)
    y = torch.cat([Y[r[:10000], torch.randint(0, nodes, (10000,), generator=g)],  # node values (ties)
                   Y[r[10000:], 0] - 1 + (Y[r[10000:], -1] - Y[r[10000:], 0] + 2)
                   * torch.rand(10000, generator=g, dtype=F64)])  # between and beyond the ends
    found = hermite.search(Y.reshape(-1), r * nodes, nodes, y) - r * nodes
    ref = torch.stack([torch.searchsorted(Y[i], y[k:k + 1], right=True)[0] for k, i in enumerate(r.tolist())])
    assert torch.equal(found, (ref - 1).clamp(0, nodes - 2))


def test_hermite_inverse_is_exact_on_the_von_mises_tables():
    """y ↦ (j, τ) ↦ Y(j, τ) returns y to rounding over both tables of the von-mises-exp range."""
    kappa = np.geomspace(1e-3, 1.1e3, 40)
    table = GeodesicAngleCDF(kappa, 2)
    g = torch.Generator().manual_seed(3)
    n = 200000
    rows = torch.randint(0, len(kappa), (n,), generator=g)
    b = torch.randint(0, 2, (n,), generator=g)
    base = (b * len(kappa) + rows) * table.nodes
    lo, hi = torch.take(table.Y, base), torch.take(table.Y, base + table.nodes - 1)
    y = lo + (hi - lo) * torch.rand(n, generator=g, dtype=F64)
    h = torch.take(table.h, rows)
    j, tau = hermite.invert(table.Y, table.M, base, table.nodes, h, y)
    assert ((tau >= 0) & (tau <= 1)).all()
    back = hermite.value(table.Y, table.M, base + j, tau, h)
    assert ((back - y).abs() <= 1e-13 * (1 + y.abs())).all()


# ----------------------------------------------------------------------------- von Mises
def test_signed_angle_far_normal_tail():
    """Above |ξ| = Φ⁻¹(¾) the tail is log erfc(|ξ|/√2) up to |ξ| = 37 and log 2 + log Φ(−|ξ|)
    beyond; both agree with the log Φ formula (to rounding) on either side of the switch."""
    table = GeodesicAngleCDF(np.array([0.5, 60.0, 1.1e3]), 2)
    xi = torch.tensor([0.7, 3.0, 8.0, 20.0, 36.9, 37.0, 37.1, 40.0, 200.0], dtype=F64)
    for row in range(3):
        rows = torch.full_like(xi, row, dtype=torch.long)
        theta, psi = signed_angle_from_normal(table, xi, rows)
        ref_theta, ref_psi = table.angle(torch.zeros_like(xi, dtype=torch.bool),
                                         math.log(2.0) + torch.special.log_ndtr(-xi), rows)
        torch.testing.assert_close(theta, ref_theta, rtol=1e-13, atol=0)
        torch.testing.assert_close(psi, ref_psi, rtol=1e-12, atol=0)


def test_von_mises_blockwise_maps_match_one_example_at_a_time():
    d = 1000
    n = 3 * _BLOCK // d + 5  # several blocks and a ragged last one
    fam = VonMises((d,), kappa=torch.tensor([1e-3, 0.7, 40.0, 1.1e3], dtype=F64))
    g = torch.Generator().manual_seed(4)
    xi = 3 * torch.randn((n, d), generator=g, dtype=F64)
    x0 = 2 * math.pi * torch.rand((n, d), generator=g, dtype=F64) - math.pi
    t = torch.arange(n) % 4
    x = fam.from_noise(xi, x0, t)
    for i in (0, n // 2, n - 1):
        one = fam.from_noise(xi[i:i + 1], x0[i:i + 1], t[i:i + 1])
        assert (wrap_angle(x[i:i + 1] - one).abs() <= 1e-14).all()
    # the round trip where x resolves the angle (far tails put x next to x0 + π, where its float64
    # spacing, not the map, limits the inverse; that is so one example at a time as well)
    near = xi.abs() < 4
    torch.testing.assert_close(fam.to_noise(x, x0, t)[near], xi[near], rtol=1e-9, atol=1e-9)
    # a batch-one x0 broadcast against the noise goes whole to every block
    torch.testing.assert_close(fam.from_noise(xi, x0[:1], t), fam.from_noise(xi, x0[:1].expand(n, d), t),
                               rtol=0, atol=0)


def test_rare_elements_path_matches_the_accelerator_path(monkeypatch):
    """On the CPU the power laws beyond the tables' ends and the far normal tail are computed only
    for the elements that need them; elsewhere (no host sync) for all, selected by torch.where. Both
    give the same noise maps, on a batch with elements beyond both ends of the tables."""
    fam = VonMises((4000,), kappa=torch.tensor([1e-3, 1.0, 1.1e3], dtype=F64))
    g = torch.Generator().manual_seed(5)
    xi = torch.randn((6, 4000), generator=g, dtype=F64)
    xi[:, :6] = torch.tensor([1e-9, -1e-7, 9.0, -12.0, 38.0, -50.0], dtype=F64)
    x0 = 2 * math.pi * torch.rand((6, 4000), generator=g, dtype=F64) - math.pi
    t = torch.arange(6) % 3
    x, z = fam.from_noise(xi, x0, t), fam.to_noise(fam.from_noise(xi, x0, t), x0, t)

    def everywhere(out, mask, fn, *args):
        return torch.where(mask, fn(*args), out)

    monkeypatch.setattr(geodesic, "_patch", everywhere)
    torch.testing.assert_close(fam.from_noise(xi, x0, t), x, rtol=0, atol=0)
    torch.testing.assert_close(fam.to_noise(x, x0, t), z, rtol=0, atol=0)
