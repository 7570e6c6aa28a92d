"""The distribution of the geodesic angle θ ∈ [0, π] between x and x0 under vMF_d(x0, κ) (density
∝ exp(κ cos θ) sin^{d−2} θ; for d = 2, |φ| of a von Mises angle), in the tail representation the
noise maps of the vMF and von Mises families use. Oracles: ``tests/numerics/test_geodesic.py``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special as sp_special
from torch import Tensor

from mstar_engine.numerics.special import log1mexp

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(12)

# The angle θ ∈ [0, π] between x and x0 has density ∝ exp(κ cos θ) sin^{d−2} θ. The noise maps
# never form G(θ) = P(Θ ≤ θ) near 1: a value is carried as (lower, log tail) with
# lower = (G ≤ ½), log tail = log G if lower else log S, S = 1 − G = P(Θ > θ). θ comes with its
# supplement ψ = π − θ, each computed directly (atan2) so that both ends of [0, π] keep their
# relative precision. Both tails therefore keep full relative precision, which matters in a
# reverse step where x_t can lie far in the tail of q_t(· | x̂0).
_LOG_TAIL_MIN = -700.0  # |ξ| ≤ 37.4: tails below e^{-700} (where Φ⁻¹ underflows) are clamped


def ndtri_tail(log_p: Tensor) -> Tensor:
    """Φ⁻¹(e^{log p}) for log p ≤ log ½, clamped at log p = −700 (ξ ≈ −37.4) like the tables."""
    return torch.special.ndtri(torch.exp(log_p.clamp(min=_LOG_TAIL_MIN)))


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
    """Tabulated distribution of θ ∈ [0, π] with density ∝ exp(κ_t cos θ) sin^{d−2} θ, per step
    (the angle to the mean direction under vMF_d(·, κ_t); for d = 2 it is |φ| of a von Mises
    angle φ). Same interface as :class:`SphereAngle3`: :meth:`tail` and its exact inverse
    :meth:`angle`.

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
    tables agree to ~1e-10.
    """

    def __init__(self, kappa: np.ndarray | Tensor, dim: int, nodes: int = 2048) -> None:
        if torch.is_tensor(kappa):
            kappa = kappa.detach().cpu().double().numpy()
        kappa = np.asarray(kappa, dtype=np.float64)
        if dim < 2:
            raise ValueError(f"dimension must be ≥ 2, got {dim}")
        self.dim, self.nodes = dim, nodes
        power = 1e-5 / np.sqrt(np.maximum(np.maximum(kappa, dim), 1.0))
        negligible = math.exp(-69.0 / (dim - 1))
        eps_lo = np.maximum(power, np.minimum(1.0, np.sqrt((dim - 1) / kappa)) * negligible)
        eps_hi = np.maximum(power, negligible)
        theta_hi = np.minimum(np.pi - eps_hi, 1.2 * np.sqrt(2 * (800.0 + 3 * dim) / kappa))
        u_lo = np.log(eps_lo) - np.log(np.pi - eps_lo)
        u_hi = np.log(theta_hi) - np.log(np.pi - theta_hi)
        h = (u_hi - u_lo) / (nodes - 1)
        ys, ms, zs = [], [], []
        for start in range(0, len(kappa), 32):  # chunks bound the memory of the quadrature
            sl = slice(start, start + 32)
            y, m, z = self._build(kappa[sl], u_lo[sl], u_hi[sl], h[sl])
            ys.append(y)
            ms.append(m)
            zs.append(z)
        self.lo, self.hi, self.h = (torch.from_numpy(v) for v in (u_lo, u_hi, h))
        self.Y = torch.from_numpy(np.concatenate(ys, axis=1))  # (2, S, N): L and R
        self.M = torch.from_numpy(np.concatenate(ms, axis=1))
        #: log ∫_0^π exp(κ (cos θ − 1)) sin^{d−2} θ dθ per step (numpy; a by-product, used in tests)
        self.log_z = np.concatenate(zs)
        rows = torch.arange(len(kappa))
        self.u_med = self._inverse(torch.full((len(kappa),), -math.log(2), dtype=torch.float64),
                                   torch.zeros_like(rows), rows)

    def _log_density_u(self, u: np.ndarray, kappa: np.ndarray) -> np.ndarray:
        """log of exp(κ(cos θ − 1)) sin^{d−2}θ · dθ/du at θ = π·expit(u), dθ/du = θψ/π."""
        theta = np.pi * sp_special.expit(u)
        psi = np.pi * sp_special.expit(-u)
        out = -2.0 * kappa * np.sin(theta / 2) ** 2 + np.log(theta) + np.log(psi) - math.log(math.pi)
        if self.dim != 2:
            out = out + (self.dim - 2) * np.log(np.sin(np.minimum(theta, psi)))
        return out

    def _build(self, kappa, u_lo, u_hi, h):
        n, d = self.nodes, self.dim
        U = u_lo[:, None] + h[:, None] * np.arange(n)[None, :]
        U[:, -1] = u_hi
        mid = 0.5 * (U[:, 1:] + U[:, :-1])
        half = 0.5 * (U[:, 1:] - U[:, :-1])
        Uq = mid[..., None] + half[..., None] * _GL_NODES
        log_seg = np.log(half) + _logsumexp(self._log_density_u(Uq, kappa[:, None, None]) + np.log(_GL_WEIGHTS), -1)
        # end pieces [0, ε_lo] ≈ ∫ θ^{d−2} dθ; [θ_hi, π] by 64-point Gauss–Legendre in ψ
        eps_lo = np.pi * sp_special.expit(u_lo)
        log_first = (d - 1) * np.log(eps_lo) - math.log(d - 1)
        psi_hi = np.pi * sp_special.expit(-u_hi)
        z64, w64 = np.polynomial.legendre.leggauss(64)
        psi_q = 0.5 * psi_hi[:, None] * (z64 + 1)
        log_dens = -2.0 * kappa[:, None] * np.cos(psi_q / 2) ** 2 + (d - 2) * np.log(np.sin(psi_q))
        log_last = np.log(0.5 * psi_hi) + _logsumexp(log_dens + np.log(w64), -1)
        cum_lo = np.logaddexp.accumulate(np.concatenate([log_first[:, None], log_seg], 1), axis=1)
        cum_hi = np.logaddexp.accumulate(np.concatenate([log_last[:, None], log_seg[:, ::-1]], 1), axis=1)[:, ::-1]
        log_total = np.logaddexp(cum_lo[:, -1], log_last)[:, None]
        log_f = self._log_density_u(U, kappa[:, None])
        Y = np.stack([cum_lo - log_total, log_total - cum_hi])
        M = np.stack([_monotone_slopes(Y[0], np.exp(log_f - cum_lo), h),
                      _monotone_slopes(Y[1], np.exp(log_f - cum_hi), h)])
        return Y, M, log_total[:, 0]

    # ------------------------------------------------------------------ device
    def to(self, device: torch.device | str) -> "GeodesicAngleCDF":
        for key in ("lo", "hi", "h", "Y", "M", "u_med"):
            setattr(self, key, getattr(self, key).to(device))
        return self

    # ------------------------------------------------------------------ interpolation
    @staticmethod
    def _hermite(tau, y0, y1, m0, m1):
        t2 = tau * tau
        t3 = t2 * tau
        return (2 * t3 - 3 * t2 + 1) * y0 + (t3 - 2 * t2 + tau) * m0 + (3 * t2 - 2 * t3) * y1 + (t3 - t2) * m1

    @staticmethod
    def _hermite_slope(tau, y0, y1, m0, m1):
        t2 = tau * tau
        return (6 * t2 - 6 * tau) * (y0 - y1) + (3 * t2 - 4 * tau + 1) * m0 + (3 * t2 - 2 * tau) * m1

    def _ends(self, b: Tensor, rows: Tensor):
        """Values and power-law slopes at the end nodes: d/d log θ below, −d/d log ψ above."""
        a, z = self.lo[rows], self.hi[rows]
        first, last = torch.zeros_like(rows), torch.full_like(rows, self.nodes - 1)
        y0, y1 = self.Y[b, rows, first], self.Y[b, rows, last]
        s0 = self.M[b, rows, first] * (1 + torch.exp(a))   # du/d log θ = π/ψ = 1 + e^u
        s1 = self.M[b, rows, last] * (1 + torch.exp(-z))   # −du/d log ψ = π/θ = 1 + e^{−u}
        return y0, s0, y1, s1

    def _value(self, u: Tensor, b: Tensor, rows: Tensor) -> Tensor:
        """Table b (0: L, 1: R) at u; power laws beyond the end nodes."""
        a, z_end, h = self.lo[rows], self.hi[rows], self.h[rows]
        z = (u - a) / h
        zc = z.clamp(0.0, self.nodes - 1.0)
        j = torch.floor(zc).clamp(max=self.nodes - 2)
        tau = zc - j
        j = j.long()
        inside = self._hermite(tau, self.Y[b, rows, j], self.Y[b, rows, j + 1],
                               self.M[b, rows, j] * h, self.M[b, rows, j + 1] * h)
        y0, s0, y1, s1 = self._ends(b, rows)
        log_theta = -torch.nn.functional.softplus(-u)  # log(θ/π)
        log_psi = -torch.nn.functional.softplus(u)     # log(ψ/π)
        below = y0 + s0 * (log_theta + torch.nn.functional.softplus(-a))
        above = y1 - s1 * (log_psi + torch.nn.functional.softplus(z_end))
        return torch.where(u < a, below, torch.where(u > z_end, above, inside))

    def _inverse(self, y: Tensor, b: Tensor, rows: Tensor, newton_steps: int = 12) -> Tensor:
        """u with table b at u equal to y: binary search, then safeguarded Newton on the cubic."""
        a, z_end, h = self.lo[rows], self.hi[rows], self.h[rows]
        lo_idx = torch.zeros_like(rows)
        hi_idx = torch.full_like(rows, self.nodes - 1)
        for _ in range(int(math.ceil(math.log2(self.nodes - 1)))):
            mid = (lo_idx + hi_idx) // 2
            up = self.Y[b, rows, mid] <= y
            lo_idx = torch.where(up, mid, lo_idx)
            hi_idx = torch.where(up, hi_idx, mid)
        y0, y1 = self.Y[b, rows, lo_idx], self.Y[b, rows, lo_idx + 1]
        m0, m1 = self.M[b, rows, lo_idx] * h, self.M[b, rows, lo_idx + 1] * h
        gap = y1 - y0
        tau = torch.where(gap > 0, (y - y0) / torch.where(gap > 0, gap, 1.0), 0.0).clamp(0.0, 1.0)
        t_lo, t_hi = torch.zeros_like(tau), torch.ones_like(tau)
        for _ in range(newton_steps):
            f = self._hermite(tau, y0, y1, m0, m1) - y
            t_hi = torch.where(f > 0, tau, t_hi)
            t_lo = torch.where(f > 0, t_lo, tau)
            df = self._hermite_slope(tau, y0, y1, m0, m1)
            step = tau - f / torch.where(df > 0, df, 1.0)
            ok = (df > 0) & (step >= t_lo) & (step <= t_hi)
            tau = torch.where(ok, step, 0.5 * (t_lo + t_hi))
        u = a + (lo_idx.to(tau.dtype) + tau) * h
        e0, s0, e1, s1 = self._ends(b, rows)
        # power laws: log(θ/π) = log(θ_0/π) + (y − e0)/s0, log(ψ/π) = log(ψ_1/π) − (y − e1)/s1
        lt = (-torch.nn.functional.softplus(-a) + (y - e0) / torch.where(s0 > 0, s0, 1.0)).clamp(max=0.0)
        lp = (-torch.nn.functional.softplus(z_end) - (y - e1) / torch.where(s1 > 0, s1, 1.0)).clamp(max=0.0)
        u = torch.where(y < e0, lt - log1mexp(lt), u)
        return torch.where(y > e1, log1mexp(lp) - lp, u)

    # ------------------------------------------------------------------ tail representation
    def tail(self, theta: Tensor, psi: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(lower, log tail) of the angle θ (with ψ = π − θ): log G(θ) if G ≤ ½, else log S(θ)."""
        u = torch.log(theta) - torch.log(psi)
        lower = u <= self.u_med[rows]
        value = self._value(u, (~lower).long(), rows)
        return lower, torch.where(lower, value, -value)

    def angle(self, lower: Tensor, log_tail: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(θ, ψ = π − θ) from (lower, log tail): the exact inverse of :meth:`tail`."""
        u = self._inverse(torch.where(lower, log_tail, -log_tail), (~lower).long(), rows)
        return math.pi * torch.sigmoid(u), math.pi * torch.sigmoid(-u)


def _monotone_slopes(Y: np.ndarray, M: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Fritsch–Carlson: scale the node slopes of an increasing table so that the cubic Hermite
    interpolant is monotone (α² + β² ≤ 9 on every interval; zero slopes on flat intervals)."""
    M = np.nan_to_num(M, nan=0.0, posinf=0.0)
    delta = np.diff(Y, axis=1) / h[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.sqrt(M[:, :-1] ** 2 + M[:, 1:] ** 2) / delta
        tau = np.where(delta > 0, np.minimum(1.0, 3.0 / np.maximum(norm, 1e-300)), 0.0)
    node_tau = np.ones_like(M)
    node_tau[:, :-1] = tau
    node_tau[:, 1:] = np.minimum(node_tau[:, 1:], tau)
    return M * node_tau


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))
