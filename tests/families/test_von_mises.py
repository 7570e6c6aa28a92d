"""von Mises family: density, CDF, sampler and KL oracles against scipy and quadrature."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from mstar_engine.families.base import DomainError
from mstar_engine.families.von_mises import VonMises, wrap_angle
from mstar_engine.process.kernel import coupled_step
from tests.families.fixtures import out_of_domain, toy, toy_data

F64 = torch.float64
KAPPAS = [1e-4, 0.05, 1.0, 8.0, 60.0, 1e3, 1e5]


def family(d: int = 2) -> VonMises:
    return VonMises((d,), kappa=torch.tensor(KAPPAS, dtype=F64))


def test_log_prob_matches_scipy():
    fam = family(3)
    g = torch.Generator().manual_seed(0)
    x0, x = toy_data(fam, 5, g), toy_data(fam, 5, g)
    for t, k in enumerate(KAPPAS):
        ref = stats.vonmises(k, loc=x0.numpy()).logpdf(x.numpy()).sum(1)
        np.testing.assert_allclose(fam.log_prob(x, x0, t).numpy(), ref, rtol=1e-11, atol=1e-11)


def _cdf_quadrature(phi: float, kappa: float) -> float:
    """P(Φ ≤ φ) for Φ ~ VM(0, κ) on [−π, π), by quadrature split at 0 and the bulk scale."""
    f = lambda a: math.exp(kappa * (math.cos(a) - 1))
    s = min(math.pi, 1 / math.sqrt(kappa))
    cuts = sorted({-math.pi, math.pi, 0.0, *[c for c in (-4 * s, -s, s, 4 * s) if abs(c) < math.pi]})

    def integral(lo, hi):
        pts = [lo] + [c for c in cuts if lo < c < hi] + [hi]
        return sum(integrate.quad(f, a, b, epsabs=0, epsrel=1e-12, limit=200)[0] for a, b in zip(pts, pts[1:]))

    return integral(-math.pi, phi) / integral(-math.pi, math.pi)


def test_noise_map_is_the_von_mises_cdf():
    """Φ(to_noise(x)) = F_VM(x − x0): against quadrature (1e-9) and scipy.stats.vonmises.cdf."""
    fam = family(1)
    phi = torch.tensor([-3.0, -1.2, -0.3, -1e-3, 0.0, 2e-5, 0.4, 1.5, 3.1], dtype=F64)
    x0 = torch.full((len(phi), 1), 0.5, dtype=F64)
    x = wrap_angle(x0 + phi[:, None])
    for t, k in enumerate(KAPPAS):
        xi = fam.to_noise(x, x0, t)[:, 0].numpy()
        u, u_up = stats.norm.cdf(xi), stats.norm.sf(xi)
        ref = np.array([_cdf_quadrature(p, k) for p in phi.tolist()])
        ref_up = np.array([_cdf_quadrature(-p, k) for p in phi.tolist()])  # symmetry: 1 − F(φ) = F(−φ)
        # each tail to 1e-8 relative where it is representable; tails below e^{-700} are clamped
        for ours, exact in ((u, ref), (u_up, ref_up)):
            ok = exact > 1e-290
            np.testing.assert_allclose(ours[ok], exact[ok], rtol=1e-8, atol=0)
            assert (ours[~ok] < 1e-290).all()
        # scipy's own von Mises CDF is accurate to ~1e-6 only (e.g. κ = 60)
        np.testing.assert_allclose(u, stats.vonmises(k).cdf(phi.numpy()), rtol=0, atol=2e-6)


def test_samples_match_scipy_and_round_trip():
    fam = family(2)
    g = torch.Generator().manual_seed(1)
    n = 3000
    x0 = toy_data(fam, n, g)
    for t, k in enumerate(KAPPAS):
        x = fam.sample(x0, t, g)
        fam.check_domain(x)
        offsets = wrap_angle(x - x0).flatten().numpy()
        assert stats.kstest(offsets, stats.vonmises(k).cdf).pvalue > 1e-3
        xi = fam.to_noise(x, x0, t)
        assert stats.kstest(xi.flatten().numpy(), "norm").pvalue > 1e-3
        back = fam.from_noise(xi, x0, t)
        assert wrap_angle(back - x).abs().max() < 1e-13


def test_round_trip_across_the_wrap_and_far_tails():
    fam = family(1)
    x0 = torch.tensor([[3.1], [-3.1], [0.0], [0.0], [1.0]], dtype=F64)
    x = torch.tensor([[-3.1], [3.1], [-math.pi], [3.14159], [-2.0]], dtype=F64)
    for t, k in enumerate(KAPPAS):
        xi = fam.to_noise(x, x0, t)
        assert torch.isfinite(xi).all() and (xi.abs() < 38).all()  # far tails are clamped, not ±inf
        back = fam.from_noise(xi, x0, t)
        if k <= 60:  # every point has tail probability above e^{-700}: exact round trip
            assert (wrap_angle(back - x).abs() < 1e-12).all()
        else:  # points beyond the clamp come back in the far tail, on the same side
            assert (torch.sign(wrap_angle(back - x0)) == torch.sign(wrap_angle(x - x0))).all()
        assert (wrap_angle(back - x)[:2].abs() < 1e-12).all()  # across the wrap, close to x0


def test_kernel_preserves_marginal():
    fam = toy(VonMises)
    g = torch.Generator().manual_seed(2)
    n = 4000
    x0 = toy_data(fam, n, g)
    t = 5
    x_t = fam.sample(x0, t, g)
    direct = wrap_angle(fam.sample(x0, t - 1, g) - x0).flatten().numpy()
    for rho in (0.0, 0.5, 0.99, 1.0):
        y = wrap_angle(coupled_step(fam, x_t, x0, t, rho, g) - x0).flatten().numpy()
        assert stats.ks_2samp(y, direct).pvalue > 1e-3


def test_kl_closed_form_and_monte_carlo():
    fam = toy(VonMises, dim=2)
    g = torch.Generator().manual_seed(3)
    x0, x0_hat = toy_data(fam, 1, g), toy_data(fam, 1, g)
    n = 20000
    for t in (2, 4, 7):
        k = float(fam.kappa[t])
        ref = k * special.i1e(k) / special.i0e(k) * (1 - np.cos((x0 - x0_hat).numpy())).sum()
        assert float(fam.kl(x0, x0_hat, t)) == pytest.approx(ref, rel=1e-10)
        x = fam.sample(x0.expand(n, 2), t, g)
        diff = fam.log_prob(x, x0.expand(n, 2), t) - fam.log_prob(x, x0_hat.expand(n, 2), t)
        assert abs(float(diff.mean()) - ref) < 4 * float(diff.std()) / math.sqrt(n)
    assert float(fam.kl(x0, x0, 3)) == 0.0
    assert float(fam.kl_rescaled(x0, x0 + 2 * math.pi, 3)) == pytest.approx(0.0, abs=1e-24)


def test_exponential_family_identity():
    fam = toy(VonMises, dim=3)
    g = torch.Generator().manual_seed(4)
    x0, x0b, x = toy_data(fam, 4, g), toy_data(fam, 4, g), toy_data(fam, 4, g)
    assert fam.stat(x, 2).shape == (4, 3, 2) == fam.features(x0).shape
    for t in range(fam.steps + 1):
        rest_a = fam.log_prob(x, x0, t) - ((fam.features(x0) * fam.stat(x, t)).sum((1, 2)) - fam.log_normalizer(x0, t))
        rest_b = fam.log_prob(x, x0b, t) - ((fam.features(x0b) * fam.stat(x, t)).sum((1, 2)) - fam.log_normalizer(x0b, t))
        torch.testing.assert_close(rest_a, rest_b, rtol=0, atol=1e-9)


def test_head_prior_domain():
    fam = toy(VonMises, dim=2, dtype=torch.float32)
    raw = torch.tensor([[[-1.0, 0.0], [-1.0, -0.0]], [[50.0, -50.0], [0.0, 0.0]]])
    out = fam.head(raw)
    assert out.shape == (2, 2)
    fam.check_domain(out, "head output")  # atan2(0, −1) = π is mapped to −π
    assert float(out[0, 0]) == pytest.approx(-math.pi)
    prior = fam.prior_sample(4000, torch.Generator().manual_seed(0))
    fam.check_domain(prior)
    assert stats.kstest(prior.flatten().numpy(), stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 1e-3
    with pytest.raises(DomainError, match=r"outside \[−π, π\)"):
        fam.check_domain(out_of_domain(fam))
    with pytest.raises(ValueError, match="kappa"):
        VonMises((2,), kappa=torch.tensor([1.0, 0.0], dtype=F64))
