"""Wishart family on symmetric positive-definite p×p matrices (MATH.md §4; notes §3.5).

Code convention of the published implementation:

    q_t(X | X0) = W_p(n_t, V_t),   V_t = M_t⁻¹ / n_t,   M_t = ξ_t X0⁻¹ + (1 − ξ_t) I,

so E[X_t] = M_t⁻¹ moves from X0 (ξ = 1) to I (ξ = 0). Written out,

    log q_t = (n−p−1)/2 log|X| − ½ tr(V⁻¹X) − (np/2) log 2 − (n/2) log|V| − lnΓ_p(n/2),
    ½ tr(V⁻¹X) = ½ n ξ tr(X0⁻¹X) + ½ n (1 − ξ) tr X,

hence T(X) = X, A_t = n_t ξ_t (a scalar), f(X0) = −½ X0⁻¹, Ω_t(X0) = (n/2) log|V_t| + (np/2) log 2
+ lnΓ_p(n/2) and c_t(X) = (n−p−1)/2 log|X| − ½ n (1 − ξ) tr X. M_t⁻¹ is computed as
X0 (ξ I + (1 − ξ) X0)⁻¹, which needs no inverse of X0.

Noise map (Bartlett decomposition; noise_shape (p(p+1)/2,), the lower triangle of a p×p matrix
packed row by row, the order of ``torch.tril_indices(p, p)``): with L = chol V_t,

    A_ii = sqrt(c_i),  c_i = 2 F⁻¹_{(n−i)/2}(Φ(ξ_ii)) ~ χ²_{n−i}  (i = 0..p−1, Gamma inverse CDF),
    A_ij = ξ_ij (i > j),   X = L A Aᵀ Lᵀ ~ W_p(n, V).

The inverse A = L⁻¹ chol(X) is exact (``inverse_uses_aux`` = False): ξ_ii = Φ⁻¹(P((n−i)/2, A_ii²/2)),
taken from the smaller tail (clamped to ±37.5 where that tail underflows). The Gamma inverse CDF is ``special.gamma_icdf`` (float64,
safeguarded Halley), called with log Φ(ξ) so that both tails keep their precision. Float64 inside.
``sample`` (the star-shaped draws) builds the same factor without the inverse CDF: c_i = 2 G_i with
G_i ~ Gamma((n−i)/2) from torch's sampler. For p = 2, L and X = L A Aᵀ Lᵀ are computed entry by
entry (:func:`_scale_chol_2x2`; batched 2×2 LAPACK calls and matrix products cost ~10× more).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mstar_engine.families.base import Family, register, single_enough
from mstar_engine.numerics.direct_samplers import log_standard_gamma
from mstar_engine.numerics.gamma_chain import log_gamma_along
from mstar_engine.numerics.quadrature import column, cov
from mstar_engine.numerics.special import gamma_log_icdf_normal, normal_from_gamma_log

_F64 = torch.float64
_JITTER = 1e-4  # added to the head's LLᵀ


def _logdet_chol(chol: Tensor) -> Tensor:
    return 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)


def _sym(a: Tensor) -> Tensor:
    return 0.5 * (a + a.transpose(-1, -2))

def _scale_chol_2x2(x0: Tensor, xi: Tensor, n: Tensor) -> Tensor:
    """``Wishart._scale_chol`` for p = 2 in closed form (batched 2×2 LAPACK calls cost ~10× more):
    Y = B⁻¹ X0 = adj(B) X0 / det B with B = ξ I + (1 − ξ) X0, V = sym(Y)/n, L = chol V entry by
    entry; NaN where V is not numerically positive definite (as cholesky_ex's failures)."""
    x00, x01, x10, x11 = x0[:, 0, 0], x0[:, 0, 1], x0[:, 1, 0], x0[:, 1, 1]
    w = 1 - xi
    b00, b01, b10, b11 = xi + w * x00, w * x01, w * x10, xi + w * x11
    scale = 1 / ((b00 * b11 - b01 * b10) * n)
    v00 = (b11 * x00 - b01 * x10) * scale
    v10 = 0.5 * ((b11 * x01 - b01 * x11) + (b00 * x10 - b10 * x00)) * scale
    l00 = torch.sqrt(v00)
    l10 = v10 / l00
    rest = (b00 * x11 - b10 * x01) * scale - l10 * l10
    ok = (v00 > 0) & (rest > 0) & (scale > 0) & torch.isfinite(scale * rest)
    lower = torch.stack([l00, torch.zeros_like(l00), l10, torch.sqrt(rest.clamp(min=0.0))], 1).reshape(-1, 2, 2)
    return torch.where(ok[:, None, None], lower, torch.full_like(lower, math.nan))


_KL_L, _KL_W = (lambda z, w: (np.exp(0.5 * z), w / w.sum()))(*np.polynomial.hermite_e.hermegauss(80))
"""The KL-SNR reference eigenvalues λ = e^{σ Z}, Z ~ N(0, 1), σ = 0.5: Gauss–Hermite nodes, weights."""


@register
class Wishart(Family):
    """W_p(n_t, M_t⁻¹/n_t) with M_t = ξ_t X0⁻¹ + (1 − ξ_t) I; schedule arrays ``df`` (n_t > p − 1)
    and ``xi`` (ξ_t ∈ [0, 1]); event shape (p, p).

    * KL (same df) = ½ n [tr(V̂⁻¹V) − log det(V̂⁻¹V) − p] with V̂⁻¹V = M̂ M⁻¹; ``kl_rescaled`` = KL / n_t.
    * Head: raw p(p+1)/2 values → lower-triangular L (row-major packing, softplus on the
      diagonal) → L Lᵀ + 1e-4 I (plus a rounding guard, see :meth:`head`).
    * Prior: W_p(n_T, I/n_T) (q_T at X0 = I), mean I.
    """

    name = "wishart"
    summary = "Wishart W_p(n_t, V_t(X0)) on SPD matrices, mean moving from X0 to I"
    domain = "spd"
    schedule_params = ("df", "xi")
    schedules, custom_fill = ("wishart-exp",), "wishart-exp"
    kl_snr_shape = (2, 2)
    has_chart = True

    @staticmethod
    def kl_snr(params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """X0 = Q diag(λ_1..λ_p) Qᵀ, Q Haar-orthogonal, λ_k i.i.d. with log λ ~ N(0, 0.5²) (rotation
        invariant, median I); g = X0 (Frobenius). The eigenvalues of M⁻¹ = X0(ξ I + (1 − ξ) X0)⁻¹ are
        f(λ) = λ/(ξ + (1 − ξ)λ) and rotation invariance gives E M⁻¹ = E f · I, so
        E KL = −½ n ξ p Cov(f(λ), 1/λ) and Σ_ab Var X0_ab = p Var λ: SNR_KL = −½ n ξ Cov(f(λ), 1/λ) / Var λ,
        a 1-D Gauss–Hermite integral, the same for every p."""
        n, xi = column(params["df"]), column(params["xi"])
        f = _KL_L / (xi + (1 - xi) * _KL_L)
        return -0.5 * n[..., 0] * xi[..., 0] * cov(_KL_W, 1 / _KL_L, f) / cov(_KL_W, _KL_L, _KL_L)

    @staticmethod
    def kl_snr_path(lam: np.ndarray, shape: tuple[int, ...]) -> dict:
        """n = p + 3 + λ, ξ = λ/(1 + λ)."""
        lam = np.asarray(lam, dtype=np.float64)
        return {"df": shape[-1] + 3.0 + lam, "xi": lam / (1.0 + lam)}

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        super().__init__(event_shape, **schedule)
        if len(self.event_shape) != 2 or self.event_shape[0] != self.event_shape[1] or self.event_shape[0] < 1:
            raise ValueError(f"wishart needs a square event shape (p, p), got {self.event_shape}")
        p = self.p = self.event_shape[0]
        df, xi = self.df.detach().double(), self.xi.detach().double()
        if not bool(torch.isfinite(df).all()) or not bool((df > p - 1).all()):
            bad = df[~(df > p - 1)]
            raise ValueError(f"wishart schedule: the degrees of freedom must exceed p − 1 = {p - 1} at every "
                             f"step (a Wishart with df ≤ p − 1 is singular); got df = {bad.tolist()[:5]}")
        if not bool(torch.isfinite(xi).all()) or not bool(((xi >= 0) & (xi <= 1)).all()):
            raise ValueError("wishart schedule: `xi` must lie in [0, 1] at every step")
        self._df, self._xi = df, xi
        rows, cols = torch.tril_indices(p, p)
        self._rows, self._cols = rows.to(df.device), cols.to(df.device)
        self._diag = torch.nonzero(rows == cols).squeeze(1).to(df.device)  # the diagonal's packed positions

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (self.event_shape[0] * (self.event_shape[0] + 1) // 2,)  # read before __init__ by spec.memory

    @property
    def raw_shape(self) -> tuple[int, ...]:
        return self.noise_shape

    # ------------------------------------------------------------------ helpers
    def _unpack(self, v: Tensor) -> Tensor:
        """(B, p(p+1)/2) → lower-triangular (B, p, p), row-major packing."""
        out = v.new_zeros((v.shape[0], self.p, self.p))
        out[:, self._rows, self._cols] = v
        return out

    def _pack(self, a: Tensor) -> Tensor:
        return a[:, self._rows, self._cols]

    def _mean(self, x0: Tensor, xi: Tensor) -> Tensor:
        """E X_t = M⁻¹ = X0 (ξ I + (1 − ξ) X0)⁻¹ (symmetrised), float64."""
        eye = torch.eye(self.p, dtype=_F64, device=x0.device)
        b = xi[:, None, None] * eye + (1 - xi)[:, None, None] * x0
        return _sym(torch.linalg.solve(b, x0))

    def _scale_chol(self, x0: Tensor, t: Tensor) -> Tensor:
        """L = chol V_t, V_t = M_t⁻¹ / n_t; NaN for an x0 that is not numerically positive definite
        (a solver's trial point: data is checked and the head's outputs are positive definite), so
        that the maps give NaN for that example instead of failing the whole batch."""
        if self.p == 2:
            return _scale_chol_2x2(x0.to(_F64), self._xi[t], self._df[t])
        lower, info = torch.linalg.cholesky_ex(self._mean(x0.to(_F64), self._xi[t]) / self._df[t][:, None, None])
        return torch.where((info == 0)[:, None, None], lower, torch.full_like(lower, math.nan))

    def _shapes(self, t: Tensor) -> Tensor:
        """Gamma shapes (n_t − i)/2 of the Bartlett diagonal, shape (B, p)."""
        return 0.5 * (self._df[t][:, None] - torch.arange(self.p, dtype=_F64, device=t.device))

    def _bartlett(self, packed: Tensor, root_chi2: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """X = L A Aᵀ Lᵀ, L = chol V_t, with the Bartlett factor A lower-triangular: ``packed`` (B, p(p+1)/2)
        below the diagonal (its diagonal entries are ignored) and ``root_chi2`` (B, p) = √c_i on it.
        Differentiable in both."""
        lower = self._scale_chol(x0, t)
        if self.p == 2:  # elementwise: batched 2×2 matrix products cost ~10× more
            p00 = lower[:, 0, 0] * root_chi2[:, 0]
            p10 = lower[:, 1, 0] * root_chi2[:, 0] + lower[:, 1, 1] * packed[:, 1]
            p11 = lower[:, 1, 1] * root_chi2[:, 1]
            off = p00 * p10
            return torch.stack([p00 * p00, off, off, p10 * p10 + p11 * p11], 1).reshape(-1, 2, 2).to(x0.dtype)
        la = lower @ self._unpack(packed.index_copy(1, self._diag, root_chi2))
        return _sym(la @ la.transpose(-1, -2)).to(x0.dtype)

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """X = L A Aᵀ Lᵀ with the Bartlett factor A built from ξ (see the module docstring)."""
        t = self._steps(t, xi.shape[0])
        xi = xi.to(_F64)
        diag = xi[:, self._diag]
        # differentiable in ξ with the exact derivative (the learned coupling's kernel KL needs it;
        # autograd through the Newton iterations gave NaN gradients)
        chi2 = 2 * torch.exp(gamma_log_icdf_normal(diag, self._shapes(t).expand_as(diag)))
        return self._bartlett(xi, torch.sqrt(chi2), x0, t)

    def from_noise_along(self, xi: Tensor, x0: Tensor, t: int,
                         before: tuple | None = None) -> tuple[Tensor, tuple | None]:
        """``from_noise`` down a coupled chain (``before`` as in :meth:`Beta.from_noise_along
        <mstar_engine.families.beta.Beta.from_noise_along>`): for float32 x0 each diagonal entry's
        log χ²/2 starts from the previous step's (:func:`~mstar_engine.numerics.gamma_chain.log_gamma_along`,
        one Gamma shape (n_t − i)/2 per column i). The state is (y, D), each (B, p). Float64 x0:
        the plain map, no state."""
        if not single_enough(x0):
            return self.from_noise(xi, x0, t), None
        steps = self._steps(t, xi.shape[0])
        xi = xi.to(_F64)
        ys, slopes = [], []
        for i, k in enumerate(self._diag.tolist()):
            a, a_prev = [0.5 * (float(self._df[s]) - i) for s in (t, min(t + 1, self.steps))]
            carried = None if before is None else (before[0][:, k], tuple(v[:, i] for v in before[1]))
            y, (_, slope) = log_gamma_along(xi[:, k], a, a_prev, carried)
            ys.append(y)
            slopes.append(slope)
        y = torch.stack(ys, 1)
        root_chi2 = torch.exp(0.5 * (y + math.log(2.0)))
        return self._bartlett(xi, root_chi2, x0, steps), (y, torch.stack(slopes, 1))

    def sample(self, x0: Tensor, t: Tensor | int, generator: torch.Generator | None = None) -> Tensor:
        """Direct draw, the law of ``from_noise`` of standard normal noise without its inverse CDF:
        the Bartlett factor with c_i = 2 G_i, G_i ~ Gamma((n_t − i)/2, 1) from ``generator`` (log
        space below shape 1), and N(0, 1) below the diagonal."""
        t = self._steps(t, x0.shape[0])
        packed = torch.randn((x0.shape[0], *self.noise_shape), generator=generator, dtype=_F64, device=x0.device)
        log_half_chi2 = log_standard_gamma(self._shapes(t), generator)
        return self._bartlett(packed, torch.exp(0.5 * (log_half_chi2 + math.log(2.0))), x0, t)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int,
                 generator: torch.Generator | None = None) -> Tensor:
        """A = L⁻¹ chol(X); ξ_ij = A_ij below the diagonal, ξ_ii = Φ⁻¹(P((n−i)/2, A_ii²/2))."""
        t = self._steps(t, x.shape[0])
        chol_x = torch.linalg.cholesky(_sym(x.to(_F64)))
        a = torch.linalg.solve_triangular(self._scale_chol(x0, t), chol_x, upper=False)

        diag = torch.diagonal(a, dim1=-2, dim2=-1)
        log_half_chi2 = 2 * torch.log(diag.abs()) - math.log(2.0)
        # Φ⁻¹ of the smaller tail, clamped to ±Z_MAX where it underflows (a state far in the tail
        # of q_t(· | X̂0) in a reverse step), with the exact derivative (the learned coupling's
        # kernel KL differentiates through it; torch.where over ndtri gave NaN gradients)
        z = normal_from_gamma_log(log_half_chi2, self._shapes(t).expand_as(diag))
        a = torch.tril(a, -1) + torch.diag_embed(z)
        return self._pack(a).to(x.dtype)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """log W_p(X; n_t, V_t)."""
        t = self._steps(t, x.shape[0])
        x64 = _sym(x.to(_F64))
        n, xi = self._df[t], self._xi[t]
        chol_x0 = torch.linalg.cholesky(_sym(x0.to(_F64)))
        tr_x0inv_x = torch.diagonal(torch.cholesky_solve(x64, chol_x0), dim1=-2, dim2=-1).sum(-1)
        tr_x = torch.diagonal(x64, dim1=-2, dim2=-1).sum(-1)
        logdet_x = _logdet_chol(torch.linalg.cholesky(x64))
        out = (0.5 * (n - self.p - 1) * logdet_x - 0.5 * n * xi * tr_x0inv_x
               - 0.5 * n * (1 - xi) * tr_x - self._omega(x0.to(_F64), t))
        return out.to(x.dtype)

    def _omega(self, x0: Tensor, t: Tensor) -> Tensor:
        """Ω_t(X0) = (n/2) log|V_t| + (np/2) log 2 + lnΓ_p(n/2), float64."""
        n = self._df[t]
        logdet_v = _logdet_chol(self._scale_chol(x0, t))
        return 0.5 * n * logdet_v + 0.5 * n * self.p * math.log(2) + torch.special.multigammaln(0.5 * n, self.p)

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """½ n [tr(M̂ M⁻¹) − log det(M̂ M⁻¹) − p], M̂ = ξ X̂0⁻¹ + (1 − ξ) I, clamped at 0.
        Computed in float64 (differentiable in x̂0), returned in the inputs' dtype."""
        t = self._steps(t, x0.shape[0])
        dtype = torch.promote_types(x0.dtype, x0_hat.dtype)
        n, xi = self._df[t], self._xi[t]
        x0, x0_hat = _sym(x0.to(_F64)), _sym(x0_hat.to(_F64))
        eye = torch.eye(self.p, dtype=_F64, device=x0.device)
        sigma = self._mean(x0, xi)  # M⁻¹ = E X_t
        chol_hat = torch.linalg.cholesky(x0_hat)
        tr_term = (xi * torch.diagonal(torch.cholesky_solve(sigma, chol_hat), dim1=-2, dim2=-1).sum(-1)
                   + (1 - xi) * torch.diagonal(sigma, dim1=-2, dim2=-1).sum(-1))
        m_hat = _sym(xi[:, None, None] * torch.cholesky_inverse(chol_hat) + (1 - xi)[:, None, None] * eye)
        logdet = _logdet_chol(torch.linalg.cholesky(m_hat)) + _logdet_chol(torch.linalg.cholesky(sigma))
        return (0.5 * n * (tr_term - logdet - self.p)).clamp(min=0.0).to(dtype)

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL / n_t."""
        t = self._steps(t, x0.shape[0])
        return self.kl(x0, x0_hat, t) / self._df[t].to(torch.promote_types(x0.dtype, x0_hat.dtype))

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """A_t T(X) = n_t ξ_t X."""
        t = self._steps(t, x.shape[0])
        return (self._df[t] * self._xi[t]).to(x.dtype)[:, None, None] * x

    def features(self, x0: Tensor) -> Tensor:
        """f(X0) = −½ X0⁻¹."""
        return (-0.5 * torch.cholesky_inverse(torch.linalg.cholesky(_sym(x0.to(_F64))))).to(x0.dtype)

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t(X0) = (n/2) log|V_t(X0)| + (np/2) log 2 + lnΓ_p(n/2)."""
        t = self._steps(t, x0.shape[0])
        return self._omega(x0.to(_F64), t).to(x0.dtype)

    # ------------------------------------------------------------------ prior, head, domain
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """W_p(n_T, I/n_T) through the Bartlett map (q_T at X0 = I)."""
        xi = torch.randn((n, *self.noise_shape), generator=generator, device=device, dtype=_F64)
        eye = torch.eye(self.p, dtype=_F64, device=device).expand(n, self.p, self.p)
        return self.from_noise(xi, eye, self.steps).to(dtype)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        """The Cholesky chart: X' = (L E)(L E)ᵀ with L = chol X and E lower-triangular from ``v``
        (packed like the noise), exp on its diagonal: SPD for every v, X' = X at v = 0."""
        e = self._unpack(v.to(_F64))
        e = torch.tril(e, -1) + torch.diag_embed(torch.exp(torch.diagonal(e, dim1=-2, dim2=-1)))
        lower = torch.linalg.cholesky(x.to(_F64)) @ e
        return _sym(lower @ lower.transpose(-1, -2)).to(x.dtype)

    def head(self, raw: Tensor) -> Tensor:
        """L Lᵀ + δ I with L lower-triangular from ``raw`` (softplus on the diagonal) and
        δ = 1e-4 + 2 p² ε max_i (L Lᵀ)_ii, ε the machine epsilon of ``raw`` (the second term bounds
        the rounding of L Lᵀ, so the output stays positive definite in float32 for raw values up
        to ±50; it is negligible in float64)."""
        lower = raw.new_zeros((*raw.shape[:-1], self.p, self.p))
        lower[..., self._rows.to(raw.device), self._cols.to(raw.device)] = raw
        diag = torch.nn.functional.softplus(torch.diagonal(lower, dim1=-2, dim2=-1))
        lower = torch.tril(lower, -1) + torch.diag_embed(diag)
        gram = lower @ lower.transpose(-1, -2)
        scale = torch.diagonal(gram, dim1=-2, dim2=-1).amax(-1).detach()
        jitter = _JITTER + 2 * self.p ** 2 * torch.finfo(raw.dtype).eps * scale
        eye = torch.eye(self.p, dtype=raw.dtype, device=raw.device)
        return gram + jitter[..., None, None] * eye

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        if x.ndim < 2 or tuple(x.shape[-2:]) != self.event_shape:
            raise self._domain_error(what, f"expected trailing shape {self.event_shape}, got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise self._domain_error(what, "it contains NaN or infinite values")
        x64 = x.to(_F64)
        tol = 1e-8 if x.dtype == torch.float64 else 1e-5
        asym = (x64 - x64.transpose(-1, -2)).abs().amax((-1, -2)) / x64.abs().amax((-1, -2)).clamp(min=1.0)
        if bool((asym > tol).any()):
            raise self._domain_error(what, f"{int((asym > tol).sum())} matrix(es) are not symmetric "
                                           f"(largest relative asymmetry {float(asym.max()):.3g}); use (X + Xᵀ)/2")
        info = torch.linalg.cholesky_ex(x64.reshape(-1, self.p, self.p)).info
        if bool((info != 0).any()):
            raise self._domain_error(what, f"{int((info != 0).sum())} matrix(es) are not positive definite "
                                           f"(Cholesky fails); add a multiple of I or clip the eigenvalues")
