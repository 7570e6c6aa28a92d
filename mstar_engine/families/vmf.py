"""von Mises–Fisher family on the sphere S^{d-1}, any d ≥ 2 (MATH.md §4; notes §3.4).

    q_t(x | x0) = C_d(κ_t) exp(κ_t <x0, x>),   C_d(κ) = κ^{d/2-1} / ((2π)^{d/2} I_{d/2-1}(κ)),

a density with respect to the surface measure. T(x) = x, A_t = κ_t, f(x0) = x0; Ω_t = −log C_d(κ_t)
does not depend on x0, and c_t(x) = 0. KL(q_t(x0) ‖ q_t(x̂0)) = κ_t A_d(κ_t) (1 − <x0, x̂0>) with
A_d(κ) = I_{d/2}(κ) / I_{d/2-1}(κ) (:func:`bessel_ratio`).

Noise map (noise_shape (d,)). Write x = cos θ x0 + sin θ v with θ ∈ [0, π] the geodesic angle to
x0 and v a unit tangent vector at x0. Under q_t, θ and v are independent, θ has density
∝ exp(κ cos θ) sin^{d-2} θ and v is uniform on the unit sphere of the tangent space x0^⊥.

* ξ_0 ↦ θ by the inverse CDF: G(θ) = P(Θ ≤ θ) = Φ(−ξ_0), so large ξ_0 means x close to x0
  (w = <x, x0> = cos θ is increasing in ξ_0). Each half is read from its own tail, in log space:
  log G = log Φ(−ξ_0) for ξ_0 ≥ 0 and log S = log(1 − G) = log Φ(ξ_0) for ξ_0 < 0, so neither tail
  loses precision. For d = 3 in closed form (:class:`SphereAngle3`,
  w = 1 + log(u + (1 − u)e^{−2κ})/κ with u = Φ(ξ_0)); otherwise from per-step tables built at
  construction by Gauss–Legendre quadrature (:class:`GeodesicAngleCDF`).
* ξ_{1:d} ↦ v: the Gaussian vector ξ_{1:d} ∈ R^{d-1}, normalised, in an orthonormal basis of
  x0^⊥ given by the Householder reflection Q (symmetric, orthogonal, Q e_1 = x0).
* ``to_noise`` recovers θ and v exactly; the radius of the tangent Gaussian is lost, so it draws
  r ~ χ(d−1) (the norm of a fresh Gaussian) and returns r v: exactly N(0, I) for exact samples
  (``inverse_uses_aux`` = True).

Computations of the noise map run in float64 and return the input dtype.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import special as sp_special
from torch import Tensor

from mstar_engine.families.base import Family, as_steps, register

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(12)


# ---------------------------------------------------------------------------------------------
# Bessel ratio A(ν, κ) = I_ν(κ) / I_{ν−1}(κ), in torch
# ---------------------------------------------------------------------------------------------
def bessel_ratio(nu: float, kappa: Tensor) -> Tensor:
    """I_ν(κ) / I_{ν−1}(κ) for ν > 0 and κ ≥ 0, elementwise, float64, differentiable in κ.

    For κ < κ_s = max(30, 2ν²): the continued fraction r_μ = κ / (2μ + κ r_{μ+1}) evaluated by
    backward recurrence from μ = ν + N, N = ⌈sqrt(40 κ_s)⌉ + 20 (the start error is damped by
    Π r_μ² < e^{-40}). For κ ≥ κ_s: the ratio of the Hankel expansions
    I_μ(κ) ∝ Σ_k (−1)^k a_k(μ) / κ^k, a_k(μ) = Π_{j≤k} (4μ² − (2j−1)²) / (8j), 40 terms (exact
    for half-integer orders; the neglected e^{−2κ} term is < 1e-26). Relative error ≲ 1e-14 for
    κ ∈ [1e-4, 1e5] and ν ≤ 16.

    A_d(κ) of the vMF KL is ``bessel_ratio(d / 2, κ)``.
    """
    if nu <= 0:
        raise ValueError(f"bessel_ratio needs ν > 0, got {nu}")
    x = torch.as_tensor(kappa, dtype=torch.float64)
    k_s = max(30.0, 2.0 * nu * nu)
    # small / medium κ: backward recurrence of the continued fraction
    xs = torch.clamp(x, max=k_s)
    n_iter = int(math.ceil(math.sqrt(40.0 * k_s))) + 20
    top = nu + n_iter + 1
    r = xs / (top - 0.5 + torch.sqrt((top + 0.5) ** 2 + xs * xs))  # ≈ r_top, any value in [0, 1) works
    for k in range(n_iter, -1, -1):
        r = xs / (2.0 * (nu + k) + xs * r)
    # large κ: Hankel expansions
    xl = torch.clamp(x, min=k_s)
    s_num = torch.ones_like(xl)
    s_den = torch.ones_like(xl)
    t_num = torch.ones_like(xl)
    t_den = torch.ones_like(xl)
    mu_num, mu_den = 4.0 * nu * nu, 4.0 * (nu - 1.0) ** 2
    for k in range(1, 41):
        odd = (2 * k - 1) ** 2
        t_num = -t_num * (mu_num - odd) / (8.0 * k * xl)
        t_den = -t_den * (mu_den - odd) / (8.0 * k * xl)
        s_num = s_num + t_num
        s_den = s_den + t_den
    return torch.where(x < k_s, r, s_num / s_den)


def log_bessel_iv(nu: float, kappa: np.ndarray) -> np.ndarray:
    """log I_ν(κ) in numpy float64 (construction time): log(ive) + κ, with the small-κ series
    ν log(κ/2) − lnΓ(ν+1) + log(1 + κ²/(4(ν+1))) where ``ive`` underflows."""
    kappa = np.asarray(kappa, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ive = sp_special.ive(nu, kappa)
        series = nu * np.log(kappa / 2) - sp_special.gammaln(nu + 1) + np.log1p(kappa ** 2 / (4 * (nu + 1)))
        return np.where(ive > 1e-280, np.log(np.maximum(ive, 1e-300)) + kappa, series)


def log_vmf_normalizer(dim: int, kappa: np.ndarray) -> np.ndarray:
    """log C_d(κ) = (d/2 − 1) log κ − (d/2) log 2π − log I_{d/2−1}(κ) (numpy float64)."""
    nu = dim / 2 - 1
    kappa = np.asarray(kappa, dtype=np.float64)
    return nu * np.log(kappa) - (dim / 2) * math.log(2 * math.pi) - log_bessel_iv(nu, kappa)


# ---------------------------------------------------------------------------------------------
# Distribution of the geodesic angle θ: tail representation shared by the noise maps
# ---------------------------------------------------------------------------------------------
# The angle θ ∈ [0, π] between x and x0 has density ∝ exp(κ cos θ) sin^{d−2} θ. The noise maps
# never form G(θ) = P(Θ ≤ θ) near 1: a value is carried as (lower, log tail) with
# lower = (G ≤ ½), log tail = log G if lower else log S, S = 1 − G = P(Θ > θ). θ comes with its
# supplement ψ = π − θ, each computed directly (atan2) so that both ends of [0, π] keep their
# relative precision. Both tails therefore keep full relative precision, which matters in a
# reverse step where x_t can lie far in the tail of q_t(· | x̂0).
_LOG_TAIL_MIN = -700.0  # |ξ| ≤ 37.4: tails below e^{-700} (where Φ⁻¹ underflows) are clamped


def ndtri_log(log_p: Tensor) -> Tensor:
    """Φ⁻¹(e^{log p}) for log p ≤ log ½, clamped at log p = −700 (ξ ≈ −37.4)."""
    return torch.special.ndtri(torch.exp(log_p.clamp(min=_LOG_TAIL_MIN)))


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 − e^x) for x < 0 (Mächler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class SphereAngle3:
    """Closed form for d = 3: with s = 1 − cos θ and q = 1 + cos θ (= 2 sin²(ψ/2)),

        G = (1 − e^{−κs}) / (1 − e^{−2κ}),     S = e^{−κs} (1 − e^{−κq}) / (1 − e^{−2κ}),

    and the inverses s = −log(1 − G(1 − e^{−2κ}))/κ (lower half), q = log(1 + S(e^{2κ} − 1))/κ
    (upper half, evaluated in log space), i.e. w = 1 + log(u + (1 − u)e^{−2κ})/κ with u = 1 − G.
    """

    def __init__(self, kappa: Tensor) -> None:
        self.kappa = kappa.to(torch.float64)
        self.log_norm = _log1mexp(-2 * self.kappa)  # log(1 − e^{−2κ})

    def to(self, device: torch.device | str) -> "SphereAngle3":
        self.kappa, self.log_norm = self.kappa.to(device), self.log_norm.to(device)
        return self

    def tail(self, theta: Tensor, psi: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        k, ln = self.kappa[rows], self.log_norm[rows]
        s, q = 2 * torch.sin(theta / 2) ** 2, 2 * torch.sin(psi / 2) ** 2
        log_g = _log1mexp(-k * s) - ln
        log_s = -k * s + _log1mexp(-k * q) - ln
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
        s_log = torch.where(kq > 0, (_log1mexp(-kq) - ln - log_s) / k, 2.0)
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
        u = torch.where(y < e0, lt - _log1mexp(lt), u)
        return torch.where(y > e1, _log1mexp(lp) - lp, u)

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


# ---------------------------------------------------------------------------------------------
@register
class VonMisesFisher(Family):
    """vMF_d(x0, κ_t) on S^{d−1}, schedule array ``kappa`` (κ_t > 0), event shape (d,), d ≥ 2.

    * stat = κ_t x; features = x0; log_normalizer = −log C_d(κ_t) (independent of x0).
    * KL = κ_t A_d(κ_t) (1 − <x0, x̂0>); ``kl_rescaled`` = 1 − <x0, x̂0>.
    * Head: x̂0 = raw / ‖raw‖ (e_1 where ‖raw‖ < 1e-12). Prior: uniform on the sphere.
    * ``gaussian_snr`` = κ_t: for large κ the tangent deviation of x from x0 is ≈ N(0, I/κ).
    """

    name = "vmf"
    summary = "von Mises–Fisher vMF(x0, κ_t) on the unit sphere S^{d-1}, any d ≥ 2"
    domain = "sphere"
    schedule_params = ("kappa",)
    inverse_uses_aux = True

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        schedule = {k: torch.as_tensor(v, dtype=torch.float64) if not torch.is_tensor(v) else v
                    for k, v in schedule.items()}
        super().__init__(event_shape, **schedule)
        if len(self.event_shape) != 1 or self.event_shape[0] < 2:
            raise ValueError(f"vmf needs event shape (d,) with d ≥ 2, got {self.event_shape}")
        self.dim = self.event_shape[0]
        kappa = self.kappa.detach().cpu().double()
        if not bool(torch.isfinite(kappa).all()) or not bool((kappa > 0).all()):
            raise ValueError("vmf schedule: `kappa` must be finite and > 0 at every step")
        device = self.kappa.device
        self._kappa64 = kappa.to(device)
        self._kl_coef = (kappa * bessel_ratio(self.dim / 2, kappa)).to(device)
        self._log_c = torch.from_numpy(log_vmf_normalizer(self.dim, kappa.numpy())).to(device)
        self._angles = (SphereAngle3(kappa) if self.dim == 3 else GeodesicAngleCDF(kappa.numpy(), self.dim)).to(device)

    def to(self, device: torch.device | str) -> "VonMisesFisher":
        super().to(device)
        self._kappa64 = self._kappa64.to(device)
        self._kl_coef = self._kl_coef.to(device)
        self._log_c = self._log_c.to(device)
        self._angles.to(device)
        return self

    # ------------------------------------------------------------------ geometry
    @staticmethod
    def _reflect(mu: Tensor, y: Tensor) -> Tensor:
        """Q y with Q = −s (I − 2 u uᵀ / ‖u‖²), u = x0 + s e_1, s = sign(x0_0) (s = 1 at 0).
        Q is symmetric and orthogonal, Q e_1 = x0, so Q's columns 2..d span x0^⊥ and Q = Qᵀ = Q⁻¹.
        """
        s = torch.where(mu[:, :1] >= 0, 1.0, -1.0).to(mu.dtype)
        u = mu.clone()
        u[:, :1] = u[:, :1] + s
        uu = 2.0 * (1.0 + mu[:, :1].abs())
        return -s * (y - u * (2.0 * (u * y).sum(1, keepdim=True) / uu))

    def _steps(self, t: Tensor | int, batch: int) -> Tensor:
        return as_steps(t, batch, self._kappa64.device)

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """x = cos θ x0 + sin θ Q[0; g/‖g‖] with G_t(θ) = Φ(−ξ_0) and g = ξ_{1:d}.

        The angle comes from the tail of ξ_0's own sign: G = Φ(−ξ_0) for ξ_0 ≥ 0 (θ below the
        median), S = 1 − G = Φ(ξ_0) otherwise, both as log Φ(−|ξ_0|).
        """
        t = self._steps(t, xi.shape[0])
        xi = xi.to(torch.float64)
        mu = x0.to(torch.float64)
        mu = mu / mu.norm(dim=1, keepdim=True)
        xi0 = xi[:, 0]
        theta, psi = self._angles.angle(xi0 >= 0, torch.special.log_ndtr(-xi0.abs()), t)
        small = theta <= psi  # take cos and sin from the smaller of θ and ψ = π − θ
        cos = torch.where(small, torch.cos(theta), -torch.cos(psi))[:, None]
        sin = torch.where(small, torch.sin(theta), torch.sin(psi))[:, None]
        g = xi[:, 1:]
        gn = g.norm(dim=1, keepdim=True)
        e1 = torch.nn.functional.one_hot(torch.zeros_like(t), self.dim - 1).to(g.dtype)
        v = torch.where(gn > 0, g / gn.clamp(min=1e-300), e1)
        tangent = self._reflect(mu, torch.cat([torch.zeros_like(g[:, :1]), v], dim=1))
        return (cos * mu + sin * tangent).to(x0.dtype)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int,
                 generator: torch.Generator | None = None) -> Tensor:
        """ξ_0 = ±Φ⁻¹(tail) from θ = atan2(‖y_{1:}‖, y_0), ψ = atan2(‖y_{1:}‖, −y_0), y = Q x;
        ξ_{1:} = r y_{1:}/‖y_{1:}‖ with an auxiliary radius r ~ χ(d−1) drawn from ``generator``."""
        t = self._steps(t, x.shape[0])
        mu = x0.to(torch.float64)
        mu = mu / mu.norm(dim=1, keepdim=True)
        y = self._reflect(mu, x.to(torch.float64))
        tang = y[:, 1:]
        tn = tang.norm(dim=1, keepdim=True)
        theta, psi = torch.atan2(tn[:, 0], y[:, 0]), torch.atan2(tn[:, 0], -y[:, 0])
        lower, log_tail = self._angles.tail(theta, psi, t)
        z = -ndtri_log(log_tail)  # ≥ 0
        xi0 = torch.where(lower, z, -z)
        aux = torch.randn(tang.shape, generator=generator, dtype=torch.float64, device=x.device)
        r = aux.norm(dim=1, keepdim=True)
        xi_t = torch.where(tn > 0, r * tang / tn.clamp(min=1e-300), aux)
        return torch.cat([xi0[:, None], xi_t], dim=1).to(x.dtype)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """log C_d(κ_t) + κ_t <x0, x>."""
        t = self._steps(t, x.shape[0])
        k = self._kappa64[t].to(x.dtype)
        return self._log_c[t].to(x.dtype) + k * (x0 * x).sum(1)

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """κ_t A_d(κ_t) (1 − <x0, x̂0>), evaluated as ½‖x0 − x̂0‖² (equal on the sphere, exactly 0
        at x̂0 = x0 and free of cancellation when x̂0 is close to x0)."""
        t = self._steps(t, x0.shape[0])
        return self._kl_coef[t].to(x0.dtype) * self.kl_rescaled(x0, x0_hat, t)

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """1 − <x0, x̂0> = ½‖x0 − x̂0‖² for unit vectors (the KL divided by κ_t A_d(κ_t))."""
        return 0.5 * ((x0 - x0_hat) ** 2).sum(1)

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """A_t T(x) = κ_t x."""
        t = self._steps(t, x.shape[0])
        return self._kappa64[t].to(x.dtype)[:, None] * x

    def features(self, x0: Tensor) -> Tensor:
        """f(x0) = x0."""
        return x0

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t = −log C_d(κ_t), the same for every x0."""
        t = self._steps(t, x0.shape[0])
        return -self._log_c[t].to(x0.dtype)

    # ------------------------------------------------------------------ tail normalisation
    @property
    def norm_shape(self) -> tuple[int, ...]:
        return (self.event_shape[0] + 1,)

    def norm_quantity(self, s: Tensor) -> Tensor:
        """log‖s_t‖ (the posterior concentration), standardised per step."""
        return torch.log(torch.linalg.vector_norm(s, dim=1).clamp(min=torch.finfo(s.dtype).tiny))

    def normalise_stat(self, s: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """[s/‖s‖, (log‖s‖ − mean_t)/std_t]: the posterior mean direction and its concentration."""
        r = torch.linalg.vector_norm(s, dim=1, keepdim=True).clamp(min=torch.finfo(s.dtype).tiny)
        return torch.cat([s / r, (torch.log(r) - mean[:, None]) / std[:, None]], dim=1)

    def gaussian_snr(self) -> Tensor:
        """κ_t: the SNR of the small-noise Gaussian limit vMF(x0, κ) ≈ x0 + N(0, I/κ) (tangent)."""
        return self.kappa

    # ------------------------------------------------------------------ prior, head, domain
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform on S^{d−1}: normalised standard normals."""
        z = torch.randn((n, self.dim), generator=generator, device=device, dtype=torch.float64)
        return (z / z.norm(dim=1, keepdim=True)).to(dtype)

    def head(self, raw: Tensor, eps: float = 1e-12) -> Tensor:
        """raw / ‖raw‖, and e_1 where ‖raw‖ < eps (no NaN, also in the gradient)."""
        n = raw.norm(dim=-1, keepdim=True)
        e1 = torch.zeros_like(raw)
        e1[..., 0] = 1.0
        return torch.where(n > eps, raw / n.clamp(min=eps), e1)

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise self._domain_error(what, f"expected vectors of length {self.dim}, got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise self._domain_error(what, "it contains NaN or infinite values")
        tol = 1e-6 if x.dtype == torch.float64 else 1e-4
        dev = (x.to(torch.float64).norm(dim=-1) - 1).abs()
        if bool((dev > tol).any()):
            raise self._domain_error(
                what, f"{int((dev > tol).sum())} vector(s) have norm ≠ 1 (largest |‖x‖ − 1| = "
                      f"{float(dev.max()):.3g}, tolerance {tol:g}); normalise with x / ‖x‖")

    # ------------------------------------------------------------------ contract-test hooks
    @classmethod
    def toy(cls, steps: int = 8, dtype: torch.dtype = torch.float64, dim: int = 5) -> "VonMisesFisher":
        """κ_t = 10^{3 − 5t/T}: 1000 at the pseudo step, 0.01 (nearly uniform) at step T; d = 5."""
        kappa = 10.0 ** torch.linspace(3.0, -2.0, steps + 1, dtype=torch.float64)
        return cls((dim,), kappa=kappa.to(dtype))

    def toy_data(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn((n, self.dim), generator=generator, dtype=self.kappa.dtype, device=self.kappa.device)
        return z / z.norm(dim=1, keepdim=True)

    def out_of_domain_example(self) -> Tensor:
        x = torch.zeros((2, self.dim), dtype=self.kappa.dtype)
        x[0, 0] = 2.0          # norm 2
        x[1, :] = 0.1          # norm 0.1·sqrt(d)
        return x
