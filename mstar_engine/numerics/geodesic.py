"""Angles by inverse CDF for the noise maps of the vMF and von Mises families, in a tail
representation that keeps both ends of [0, π] at full relative precision:

* the geodesic angle θ ∈ [0, π] between x and x0 under vMF_d(x0, κ), density
  ∝ exp(κ cos θ) sin^{d−2} θ (:class:`SphereAngle3` for d = 3, :class:`GeodesicAngleCDF`
  otherwise; for d = 2, |φ| of a von Mises angle φ). At κ = 0 the same tables give the polar
  angles of the uniform law on a sphere (density ∝ sin^k), and :class:`UniformAngle` the azimuth;
* one standard normal per angle: :func:`angle_from_normal` / :func:`normal_from_angle` for an angle
  in [0, π], :func:`signed_angle_from_normal` / :func:`normal_from_signed_angle` for a signed angle
  in (−π, π] with a law symmetric about 0;
* :class:`SphereDirection`: a point of S^m from m normals by hyperspherical angles, and back.

The tables' interpolation and exact inversion live in :mod:`~mstar_engine.numerics.hermite`.
Oracles: ``tests/numerics/test_bessel_geodesic.py``, ``tests/families/test_fast_paths.py``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special as sp_special
from torch import Tensor

from mstar_engine.numerics import hermite
from mstar_engine.numerics.special import log1mexp

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(12)

# The noise maps never form G(θ) = P(Θ ≤ θ) near 1: a value is carried as (lower, log tail) with
# lower = (G ≤ ½), log tail = log G if lower else log S, S = 1 − G, and θ with its supplement
# ψ = π − θ, each computed directly (atan2). Both tails keep full relative precision, which matters
# in a reverse step where x_t can lie far in the tail of q_t(· | x̂0).
_LOG_TAIL_MIN = -700.0  # |ξ| ≤ 37.4: tails below e^{-700} (where Φ⁻¹ underflows) are clamped
_SQRT_HALF = math.sqrt(0.5)
_LOG_2 = math.log(2.0)
_Z_34 = 0.6744897501960817  # Φ⁻¹(¾): |ξ| ≤ it ⇔ erf(|ξ|/√2) ≤ ½
_ERFC_NORMAL = 37.0  # erfc(|ξ|/√2) ≈ 5e-300 at |ξ| = 37, a normal float64


def _softplus(x: Tensor) -> Tensor:
    """log(1 + e^x) to full precision (torch's softplus returns x itself above x = 20)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _patch(out: Tensor, mask: Tensor, fn, *args: Tensor) -> Tensor:
    """``out`` with ``fn(*args)`` where ``mask`` (``args`` broadcast against it). For the rare
    elements (the power laws beyond a table's ends, far normal tails): on the CPU ``fn`` sees only
    those elements, elsewhere all of them (a torch.where, no host sync)."""
    if out.device.type != "cpu":
        return torch.where(mask, fn(*args), out)
    if not bool(mask.any()):
        return out
    idx = torch.nonzero(mask, as_tuple=True)
    return out.index_put(idx, fn(*(v.expand(mask.shape)[idx] for v in args)))


def ndtri_tail(log_p: Tensor) -> Tensor:
    """Φ⁻¹(e^{log p}) for log p ≤ log ½, clamped at log p = −700 (ξ ≈ −37.4) like the tables."""
    return torch.special.ndtri(torch.exp(log_p.clamp(min=_LOG_TAIL_MIN)))


def cos_sin(theta: Tensor, psi: Tensor) -> tuple[Tensor, Tensor]:
    """cos θ and sin θ from θ and ψ = π − θ, each taken from the smaller of the two."""
    small = theta <= psi
    return torch.where(small, torch.cos(theta), -torch.cos(psi)), torch.where(small, torch.sin(theta), torch.sin(psi))


# A law of an angle in [0, π] is an object with ``tail(θ, ψ, rows) -> (lower, log tail)`` and its
# exact inverse ``angle(lower, log tail, rows) -> (θ, ψ)``: SphereAngle3, GeodesicAngleCDF, UniformAngle.
def angle_from_normal(law, xi: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor]:
    """(θ, ψ = π − θ) with G(θ) = Φ(−ξ): large ξ means a small angle. Each half is read from the
    tail of ξ's own sign, log G = log Φ(−ξ) for ξ ≥ 0 and log S = log Φ(ξ) otherwise."""
    return law.angle(xi >= 0, torch.special.log_ndtr(-xi.abs()), rows)


def normal_from_angle(law, theta: Tensor, psi: Tensor, rows: Tensor | None) -> Tensor:
    """The inverse of :func:`angle_from_normal`: ξ = ±Φ⁻¹(tail), clamped at |ξ| ≈ 37.4."""
    lower, log_tail = law.tail(theta, psi, rows)
    z = -ndtri_tail(log_tail)  # ≥ 0
    return torch.where(lower, z, -z)


def signed_angle_from_normal(law, xi: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor]:
    """(|φ|, π − |φ|) of the signed angle φ = sign(ξ)|φ| whose CDF is Φ(ξ), for a law symmetric
    about 0 with |φ| ~ ``law``: G(|φ|) = erf(|ξ|/√2). |ξ| ≤ Φ⁻¹(¾) is the lower half,
    log G = log erf(|ξ|/√2); above it log S = log 2 + log Φ(−|ξ|), so neither tail loses precision."""
    a = xi.abs().clamp(min=1e-300)  # log erf stays finite at ξ = 0, and so does the gradient
    lower = a <= _Z_34
    # log S = log erfc(|ξ|/√2), exact to rounding while erfc is a normal number (|ξ| ≤ 37), then
    # log 2 + log Φ(−|ξ|) (slow: computed only there on the CPU)
    tail = torch.where(lower, torch.erf(a.clamp(max=_Z_34) * _SQRT_HALF),
                       torch.special.erfc(a.clamp(_Z_34, _ERFC_NORMAL) * _SQRT_HALF))
    log_tail = _patch(torch.log(tail), a > _ERFC_NORMAL, lambda v: _LOG_2 + torch.special.log_ndtr(-v), a)
    return law.angle(lower, log_tail, rows)


def normal_from_signed_angle(law, theta: Tensor, psi: Tensor, rows: Tensor | None) -> Tensor:
    """|ξ| for |φ| = θ (ψ = π − θ), the inverse of :func:`signed_angle_from_normal`:
    √2 erf⁻¹(G) below the median, −Φ⁻¹(S/2) above it. The caller multiplies by sign(φ)."""
    lower, log_tail = law.tail(theta, psi, rows)
    small = math.sqrt(2) * torch.erfinv(torch.exp(torch.where(lower, log_tail, -_LOG_2)))
    return torch.where(lower, small, -ndtri_tail(torch.where(lower, -_LOG_2, log_tail) - _LOG_2))


class UniformAngle:
    """θ uniform on [0, π] (|φ| of a uniform angle on the circle): G = θ/π, S = ψ/π."""

    @staticmethod
    def tail(theta: Tensor, psi: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lower = theta <= psi
        return lower, torch.log(torch.where(lower, theta, psi) / math.pi)

    @staticmethod
    def angle(lower: Tensor, log_tail: Tensor, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        near = math.pi * torch.exp(log_tail)  # the smaller of θ and ψ
        return torch.where(lower, near, math.pi - near), torch.where(lower, math.pi - near, near)


class SphereAngle3:
    """Closed form for d = 3: with s = 1 − cos θ and q = 1 + cos θ (= 2 sin²(ψ/2)),

        G = (1 − e^{−κs}) / (1 − e^{−2κ}),     S = e^{−κs} (1 − e^{−κq}) / (1 − e^{−2κ}),

    and the inverses s = −log(1 − G(1 − e^{−2κ}))/κ (lower half), q = log(1 + S(e^{2κ} − 1))/κ
    (upper half, evaluated in log space), i.e. w = 1 + log(u + (1 − u)e^{−2κ})/κ with u = 1 − G.
    """

    def __init__(self, kappa: Tensor) -> None:
        self.kappa = kappa.to(torch.float64)
        self.log_norm = log1mexp(-2 * self.kappa)  # log(1 − e^{−2κ})

    def to(self, device: torch.device | str) -> "SphereAngle3":
        self.kappa, self.log_norm = self.kappa.to(device), self.log_norm.to(device)
        return self

    def tail(self, theta: Tensor, psi: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        k, ln = self.kappa[rows], self.log_norm[rows]
        s, q = 2 * torch.sin(theta / 2) ** 2, 2 * torch.sin(psi / 2) ** 2
        log_g = log1mexp(-k * s) - ln
        log_s = -k * s + log1mexp(-k * q) - ln
        lower = log_g <= -math.log(2)
        return lower, torch.where(lower, log_g, log_s)

    def angle(self, lower: Tensor, log_tail: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        k, ln = self.kappa[rows], self.log_norm[rows]
        g = torch.exp(torch.where(lower, log_tail, -math.log(2)))
        s_lower = -torch.log1p(g * torch.expm1(-2 * k)) / k
        # κq = log(1 + S (e^{2κ} − 1)) = logaddexp(0, log S + 2κ + log(1 − e^{−2κ}))
        log_s = torch.where(lower, -math.log(2), log_tail)
        kq = torch.logaddexp(torch.zeros_like(log_tail), log_s + 2 * k + ln)
        # for large κ (upper-half s as small as ~1/κ), s from log S = −κs + log(1 − e^{−κq}) − log(1 − e^{−2κ})
        # rather than 2 − q (cancellation); for small κ the division by κ would amplify rounding
        s_log = torch.where(kq > 0, (log1mexp(-kq) - ln - log_s) / k, 2.0)
        s_upper = torch.where(k > 20, s_log, 2 - kq / k)
        s = torch.where(lower, s_lower, s_upper).clamp(0.0, 2.0)
        q = torch.where(lower, 2 - s_lower, kq / k).clamp(0.0, 2.0)
        return 2 * torch.atan2(torch.sqrt(s), torch.sqrt(q)), 2 * torch.atan2(torch.sqrt(q), torch.sqrt(s))


class GeodesicAngleCDF:
    """Tabulated distribution of θ ∈ [0, π] with density ∝ exp(κ_t cos θ) sin^{d−2} θ, per row t
    (the angle to the mean direction under vMF_d(·, κ_t); for d = 2 it is |φ| of a von Mises
    angle φ). κ_t ≥ 0 and d (an integer, or one per row) ≥ 2: at κ = 0 a row is the law of a polar
    angle of the uniform law on a sphere, density ∝ sin^{d−2} θ. Same interface as
    :class:`SphereAngle3`: :meth:`tail` and its exact inverse :meth:`angle`.

    Two increasing tables against u = log(θ/ψ), ψ = π − θ (geometric spacing towards both ends):
    L(u) = log G for the lower half and R(u) = −log S for the upper half, ``nodes`` points uniform
    in u per step, from θ = ε_lo to θ = π − ε_hi:

    * ε_lo = max(1e-5/sqrt(max(κ, d, 1)), min(1, sqrt((d−1)/κ)) e^{−69/(d−1)}): below it G is a
      power law c θ^{d−1} (relative error O((κ + d) ε²) ≈ 1e-10) or below ~1e-30;
    * ε_hi likewise at the π end (S ≈ c' ψ^{d−1}); for large κ the table stops earlier, at
      θ ≈ 1.2 sqrt(2(800 + 3d)/κ) where log S ≈ −800 (the noise maps clamp tails at e^{−700}).

    Beyond the end nodes the tables continue as those power laws (linear in log θ, resp. log ψ).
    Node values come from 12-point Gauss–Legendre quadrature of every interval in log space
    (no underflow: S ~ e^{−2κ} near π), normalised by the total, so no Bessel function is needed;
    the slopes dL/du, dR/du are exact. Between nodes: cubic Hermite interpolation with
    Fritsch–Carlson limited slopes (monotone). The inverse finds the interval by binary search and
    solves the cubic by safeguarded Newton, so :meth:`tail` and :meth:`angle` are mutual inverses
    to rounding whatever the tables' accuracy, which is ≲ 1e-8 relative for either tail against
    quadrature (typically 1e-10). The halves meet at the median (L = log ½), where the two
    tables agree to ~1e-10; the upper half is shifted by that gap (log S = −R + δ_t) so that the
    map is continuous there to rounding.
    """

    def __init__(self, kappa: np.ndarray | Tensor, dim: int | np.ndarray, nodes: int = 2048) -> None:
        if torch.is_tensor(kappa):
            kappa = kappa.detach().cpu().double().numpy()
        kappa = np.atleast_1d(np.asarray(kappa, dtype=np.float64))
        dims = np.broadcast_to(np.asarray(dim, dtype=np.float64), kappa.shape).copy()
        if not (dims >= 2).all():
            raise ValueError(f"dimension must be ≥ 2, got {dim}")
        if not (np.isfinite(kappa) & (kappa >= 0)).all():
            raise ValueError("κ must be finite and ≥ 0")
        self.dim, self.nodes = dim, nodes
        power = 1e-5 / np.sqrt(np.maximum(np.maximum(kappa, dims), 1.0))
        negligible = np.exp(-69.0 / (dims - 1))
        kappa_pos = np.maximum(kappa, 1e-300)  # κ = 0: no concentration, the tables span [0, π]
        eps_lo = np.maximum(power, np.minimum(1.0, np.sqrt((dims - 1) / kappa_pos)) * negligible)
        eps_hi = np.maximum(power, negligible)
        theta_hi = np.minimum(np.pi - eps_hi, 1.2 * np.sqrt(2 * (800.0 + 3 * dims) / kappa_pos))
        u_lo = np.log(eps_lo) - np.log(np.pi - eps_lo)
        u_hi = np.log(theta_hi) - np.log(np.pi - theta_hi)
        h = (u_hi - u_lo) / (nodes - 1)
        ys, ms, zs = [], [], []
        for start in range(0, len(kappa), 32):  # chunks bound the memory of the quadrature
            sl = slice(start, start + 32)
            y, m, z = self._build(kappa[sl], dims[sl], u_lo[sl], u_hi[sl], h[sl])
            ys.append(y)
            ms.append(m)
            zs.append(z)
        self.lo, self.hi, self.h = (torch.from_numpy(v) for v in (u_lo, u_hi, h))
        self.Y = torch.from_numpy(np.concatenate(ys, axis=1))  # (2, S, N): L and R
        self.M = torch.from_numpy(np.concatenate(ms, axis=1))
        #: log ∫_0^π exp(κ (cos θ − 1)) sin^{d−2} θ dθ per step (numpy; a by-product, used in tests)
        self.log_z = np.concatenate(zs)
        # the power laws beyond the end nodes: log(θ_0/π), log(ψ_1/π) per row; per (table, row)
        # the end values and slopes d/d log θ below (du/d log θ = 1 + e^u), −d/d log ψ above
        self.log_t0, self.log_p1 = -_softplus(-self.lo), -_softplus(self.hi)
        self.ends = (self.Y[..., 0].reshape(-1), (self.M[..., 0] * (1 + torch.exp(self.lo))).reshape(-1),
                     self.Y[..., -1].reshape(-1), (self.M[..., -1] * (1 + torch.exp(-self.hi))).reshape(-1))
        rows = torch.arange(len(kappa))
        self.u_med = self._inverse(torch.full((len(kappa),), -math.log(2), dtype=torch.float64),
                                   torch.zeros_like(rows), rows)
        self.shift = self._value(self.u_med, torch.ones_like(rows), rows) - math.log(2)  # δ_t = R(u_med) − log 2

    @staticmethod
    def _log_density_u(u: np.ndarray, kappa: np.ndarray, d: np.ndarray) -> np.ndarray:
        """log of exp(κ(cos θ − 1)) sin^{d−2}θ · dθ/du at θ = π·expit(u), dθ/du = θψ/π."""
        theta = np.pi * sp_special.expit(u)
        psi = np.pi * sp_special.expit(-u)
        out = -2.0 * kappa * np.sin(theta / 2) ** 2 + np.log(theta) + np.log(psi) - math.log(math.pi)
        return out + (d - 2) * np.log(np.sin(np.minimum(theta, psi)))

    def _build(self, kappa, d, u_lo, u_hi, h):
        n = self.nodes
        U = u_lo[:, None] + h[:, None] * np.arange(n)[None, :]
        U[:, -1] = u_hi
        mid = 0.5 * (U[:, 1:] + U[:, :-1])
        half = 0.5 * (U[:, 1:] - U[:, :-1])
        Uq = mid[..., None] + half[..., None] * _GL_NODES
        log_f_q = self._log_density_u(Uq, kappa[:, None, None], d[:, None, None])
        log_seg = np.log(half) + sp_special.logsumexp(log_f_q + np.log(_GL_WEIGHTS), axis=-1)
        # end pieces [0, ε_lo] ≈ ∫ θ^{d−2} dθ; [θ_hi, π] by 64-point Gauss–Legendre in ψ
        eps_lo = np.pi * sp_special.expit(u_lo)
        log_first = (d - 1) * np.log(eps_lo) - np.log(d - 1)
        psi_hi = np.pi * sp_special.expit(-u_hi)
        z64, w64 = np.polynomial.legendre.leggauss(64)
        psi_q = 0.5 * psi_hi[:, None] * (z64 + 1)
        log_dens = -2.0 * kappa[:, None] * np.cos(psi_q / 2) ** 2 + (d[:, None] - 2) * np.log(np.sin(psi_q))
        log_last = np.log(0.5 * psi_hi) + sp_special.logsumexp(log_dens + np.log(w64), axis=-1)
        cum_lo = np.logaddexp.accumulate(np.concatenate([log_first[:, None], log_seg], 1), axis=1)
        cum_hi = np.logaddexp.accumulate(np.concatenate([log_last[:, None], log_seg[:, ::-1]], 1), axis=1)[:, ::-1]
        log_total = np.logaddexp(cum_lo[:, -1], log_last)[:, None]
        log_f = self._log_density_u(U, kappa[:, None], d[:, None])
        Y = np.stack([cum_lo - log_total, log_total - cum_hi])
        M = np.stack([hermite.monotone_slopes(Y[0], np.exp(log_f - cum_lo), h),
                      hermite.monotone_slopes(Y[1], np.exp(log_f - cum_hi), h)])
        return Y, M, log_total[:, 0]

    # ------------------------------------------------------------------ device
    def to(self, device: torch.device | str) -> "GeodesicAngleCDF":
        for key in ("lo", "hi", "h", "Y", "M", "log_t0", "log_p1", "u_med", "shift"):
            setattr(self, key, getattr(self, key).to(device))
        self.ends = tuple(v.to(device) for v in self.ends)
        return self

    # ------------------------------------------------------------------ interpolation
    def _row(self, rows: Tensor, b: Tensor):
        """u_lo, u_hi, h per row and the flat (table, row) index (rows broadcast against b)."""
        return (*(hermite.take(v, rows) for v in (self.lo, self.hi, self.h)), b * self.Y.shape[1] + rows)

    def _end(self, k: int, br: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """End value, slope and log(θ_0/π) (k = 0, first node) or log(ψ_1/π) (k = 2, last node)."""
        return (hermite.take(self.ends[k], br), hermite.take(self.ends[k + 1], br),
                hermite.take(self.log_t0 if k == 0 else self.log_p1, rows))

    def _value(self, u: Tensor, b: Tensor, rows: Tensor) -> Tensor:
        """Table b (0: L, 1: R) at u; power laws beyond the end nodes."""
        a, z_end, h, br = self._row(rows, b)
        zc = ((u - a) / h).clamp(0.0, self.nodes - 1.0)
        j = torch.floor(zc).clamp(max=self.nodes - 2)
        inside = hermite.value(self.Y, self.M, br * self.nodes + j.long(), zc - j, h)
        out = _patch(inside, u < a, self._value_below, u, br, rows)
        return _patch(out, u > z_end, self._value_above, u, br, rows)

    def _value_below(self, u: Tensor, br: Tensor, rows: Tensor) -> Tensor:
        y0, s0, log_t0 = self._end(0, br, rows)
        return y0 + s0 * (-_softplus(-u) - log_t0)  # log(θ/π) − log(θ_0/π)

    def _value_above(self, u: Tensor, br: Tensor, rows: Tensor) -> Tensor:
        y1, s1, log_p1 = self._end(2, br, rows)
        return y1 - s1 * (-_softplus(u) - log_p1)  # log(ψ/π) − log(ψ_1/π)

    def _inverse(self, y: Tensor, b: Tensor, rows: Tensor, newton_steps: int = 12) -> Tensor:
        """u with table b at u equal to y: :func:`~mstar_engine.numerics.hermite.invert` between the
        end nodes, the power laws beyond them."""
        a, z_end, h, br = self._row(rows, b)
        j, tau = hermite.invert(self.Y, self.M, br * self.nodes, self.nodes, h, y, newton_steps)
        u = a + (j.to(tau.dtype) + tau) * h
        u = _patch(u, y < hermite.take(self.ends[0], br), self._inverse_below, y, br, rows)
        return _patch(u, y > hermite.take(self.ends[2], br), self._inverse_above, y, br, rows)

    def _inverse_below(self, y: Tensor, br: Tensor, rows: Tensor) -> Tensor:
        """log(θ/π) = log(θ_0/π) + (y − e0)/s0, as u = log(θ/ψ)."""
        e0, s0, log_t0 = self._end(0, br, rows)
        lt = (log_t0 + (y - e0) / torch.where(s0 > 0, s0, 1.0)).clamp(max=0.0)
        return lt - log1mexp(lt)

    def _inverse_above(self, y: Tensor, br: Tensor, rows: Tensor) -> Tensor:
        """log(ψ/π) = log(ψ_1/π) − (y − e1)/s1, as u = log(θ/ψ)."""
        e1, s1, log_p1 = self._end(2, br, rows)
        lp = (log_p1 - (y - e1) / torch.where(s1 > 0, s1, 1.0)).clamp(max=0.0)
        return log1mexp(lp) - lp

    # ------------------------------------------------------------------ tail representation
    def tail(self, theta: Tensor, psi: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(lower, log tail) of the angle θ (with ψ = π − θ): log G(θ) if G ≤ ½, else log S(θ)."""
        u = torch.log(theta) - torch.log(psi)
        lower = u <= self.u_med[rows]
        value = self._value(u, (~lower).long(), rows)
        return lower, torch.where(lower, value, self.shift[rows] - value)

    def angle(self, lower: Tensor, log_tail: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(θ, ψ = π − θ) from (lower, log tail): the exact inverse of :meth:`tail`."""
        u = self._inverse(torch.where(lower, log_tail, self.shift[rows] - log_tail), (~lower).long(), rows)
        return math.pi * torch.sigmoid(u), math.pi * torch.sigmoid(-u)


class SphereDirection:
    """A point v of the unit sphere S^m ⊂ R^{m+1} (m ≥ 1) from m standard normals, a bijection:

        v = (cos φ_1, sin φ_1 cos φ_2, …, sin φ_1⋯sin φ_{m−1} cos φ_m, sin φ_1⋯sin φ_{m−1} sin φ_m).

    Under the uniform law on S^m the angles are independent: the polar angle φ_j ∈ [0, π]
    (j < m) has density ∝ sin^{m−j} φ_j, a κ = 0 row of :class:`GeodesicAngleCDF` (dimension
    m − j + 2), read by :func:`angle_from_normal`; the azimuth φ_m ∈ (−π, π] is uniform, the signed
    angle of :func:`signed_angle_from_normal` with :class:`UniformAngle` (|φ_m| = π erf(|ξ|/√2)).
    """

    def __init__(self, m: int) -> None:
        if m < 1:
            raise ValueError(f"the sphere S^m needs m ≥ 1, got {m}")
        self.m = m
        self.polar = GeodesicAngleCDF(np.zeros(m - 1), np.arange(m + 1, 2, -1)) if m > 1 else None
        self._rows = torch.arange(m - 1)

    def to(self, device: torch.device | str) -> "SphereDirection":
        if self.polar is not None:
            self.polar.to(device)
        self._rows = self._rows.to(device)
        return self

    def from_normals(self, xi: Tensor) -> Tensor:
        """v ∈ S^m, shape (B, m + 1), from ξ of shape (B, m): ξ_j ↦ φ_j, the last one the azimuth."""
        az, az_c = signed_angle_from_normal(UniformAngle, xi[:, -1], None)
        cos_az, sin_az = cos_sin(az, az_c)
        sin_az = torch.where(xi[:, -1] >= 0, sin_az, -sin_az)
        if self.m == 1:
            return torch.stack([cos_az, sin_az], 1)
        theta, psi = angle_from_normal(self.polar, xi[:, :-1], self._rows.expand(xi.shape[0], -1))
        cos, sin = cos_sin(theta, psi)
        prod = torch.cumprod(sin, 1)  # Π_{i ≤ j} sin φ_i
        lead = torch.cat([torch.ones_like(prod[:, :1]), prod[:, :-1]], 1)
        return torch.cat([lead * cos, prod[:, -1:] * torch.stack([cos_az, sin_az], 1)], 1)

    def to_normals(self, v: Tensor) -> Tensor:
        """The inverse of :meth:`from_normals` for any v ≠ 0 of shape (B, m + 1) (only its
        direction matters): φ_j = atan2(‖v_{j+1:}‖, v_j) and π − φ_j = atan2(‖v_{j+1:}‖, −v_j),
        the azimuth from atan2(|v_m|, ±v_{m−1}) (0-based indices), all without cancellation."""
        a, b = v[:, -2], v[:, -1]
        az_xi = normal_from_signed_angle(UniformAngle, torch.atan2(b.abs(), a), torch.atan2(b.abs(), -a), None)
        az_xi = torch.where(b >= 0, az_xi, -az_xi)
        if self.m == 1:
            return az_xi[:, None]
        r = [torch.hypot(a, b)]  # ‖v_{j+1:}‖ from the end, by hypot: no underflow of tiny components
        for j in range(self.m - 2, 0, -1):
            r.append(torch.hypot(v[:, j], r[-1]))
        r, head = torch.stack(r[::-1], 1), v[:, :-2]
        xi = normal_from_angle(self.polar, torch.atan2(r, head), torch.atan2(r, -head),
                               self._rows.expand(v.shape[0], -1))
        return torch.cat([xi, az_xi[:, None]], 1)
