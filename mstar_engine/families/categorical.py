"""Categorical family: L positions, K classes, one-hot tokens (MATH.md §4; notes §3.6).

    q_t(x | x0) = Π_positions Cat(x; p_t(x0)),   p_t(x0) = (1 − β̄_t) x0 + β̄_t / K.

Exponential-family pieces (SS-DDPM eq. 116): the tail-statistic term of a position is the K-vector
of log-likelihoods ℓ_t(x)_k = log q_t(x | x0 = e_k) = x_k log(1 − β̄_t + β̄_t/K) + (1 − x_k) log(β̄_t/K)
(stat_shape (L, K)); f(x0) = x0, so <f(x0), stat> = log q_t(x | x0) exactly for one-hot x0,
Ω_t = 0 and c_t = 0. softmax(s_t) is then the posterior of x0 under a uniform prior.
log β̄_t/K is floored at log(tiny) so that β̄_0 = 0 (an identity pseudo step) stays finite.

Noise map: one standard normal per position (noise_shape (L,)). With u = Φ(ξ), x is the class
whose interval [C_{k−1}, C_k) of the cumulative probabilities contains u (inverse CDF).
``to_noise`` draws u uniformly inside the class's interval (``inverse_uses_aux`` = True) and
returns Φ⁻¹(u). Both directions keep u and 1 − u separately (class bounds from a forward and a
reverse cumulative sum) and use the tail nearer to the value, so intervals of width ~β̄/K far in
either tail keep full relative precision. Float64 inside.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mstar_engine.families.base import Family, register

_SQRT_HALF = math.sqrt(0.5)


def _ndtr(x: Tensor) -> Tensor:
    """Φ(x) via erfc, accurate in both tails (torch.special.ndtr is not, below x ≈ −6)."""
    return 0.5 * torch.special.erfc(-x * _SQRT_HALF)


def _not_one_hot(shape: tuple[int, ...]) -> str:
    """Why examples of ``shape`` are not categorical data, and how to convert class labels."""
    hint = ""
    if len(shape) <= 1:
        hint = " (integer class labels? one-hot rows of a single position need the positions axis: x[:, None, :])"
    elif len(shape) > 2:
        hint = " (flatten the positions: x.reshape(n, -1, K))"
    return (f"categorical data must be one-hot: shape (n, L, K) for L positions over K ≥ 2 classes, each position "
            f"a vector of K entries in [0, 1] summing to 1, but its examples have shape {shape}{hint}. Convert "
            "integer class labels with numpy: x = np.eye(K)[labels] turns labels of shape (n, L) into (n, L, K); for "
            "one label per example, np.eye(K)[labels][:, None, :] gives (n, 1, K)")


@register
class Categorical(Family):
    """Cat((1 − β̄_t) x0 + β̄_t/K) per position; schedule array ``bar_beta`` (β̄_t ∈ [0, 1]),
    event shape (L, K) of one-hot float vectors.

    * KL = Σ_positions Σ_k p_k log(p_k / p̂_k) with p = p_t(x0), p̂ = p_t(x̂0), exact for any
      probability vector x̂0 (computed as p log1p((p − p̂)/p̂), with p − p̂ = (1 − β̄)(x0 − x̂0),
      accurate also when β̄ → 1). ``kl_rescaled`` is the plain KL.
    * Head: softmax over K. Prior: uniform classes.
    * ``check_domain`` accepts probability vectors over K (one-hot data, soft x̂0 from the head).
    """

    name = "categorical"
    summary = "Categorical Cat((1-β̄_t) x0 + β̄_t/K) over one-hot tokens (L positions, K classes)"
    domain = "categorical"
    schedule_params = ("bar_beta",)
    inverse_uses_aux = True
    discrete_kernel = True
    schedules = ("categorical-d3pm",)
    kl_snr_shape = (1, 27)

    @classmethod
    def pseudo_step(cls, params: dict[str, np.ndarray]) -> dict[str, float]:
        """β̄_0 = 0, the identity: the t = 1 KL becomes the cross-entropy −log x̂0[x0]."""
        return {"bar_beta": 0.0}

    @staticmethod
    def kl_snr(params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """x0 uniform one-hot over K, g = one-hot: (1 − β̄) log(1 + K(1 − β̄)/β̄). β̄ = 0 (the identity
        pseudo step) has infinite SNR; β̄ is floored at 1e-300 there (a finite stand-in ≈ 694)."""
        bb = np.asarray(params["bar_beta"], dtype=np.float64)
        keep = 1.0 - bb
        with np.errstate(divide="ignore"):
            return np.where(keep > 0, keep * np.log1p(shape[-1] * keep / np.maximum(bb, 1e-300)), 0.0)

    @staticmethod
    def kl_snr_path(lam: np.ndarray, shape: tuple[int, ...]) -> dict:
        """β̄ = 1/(1 + λ)."""
        return {"bar_beta": 1.0 / (1.0 + np.asarray(lam, dtype=np.float64))}

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        super().__init__(event_shape, **schedule)
        if len(self.event_shape) != 2 or self.event_shape[1] < 2:
            raise self._domain_error("the data", _not_one_hot(self.event_shape))
        self.length, self.classes = self.event_shape
        bb = self.bar_beta.detach().double()
        if not bool(torch.isfinite(bb).all()) or not bool(((bb >= 0) & (bb <= 1)).all()):
            raise ValueError("categorical schedule: `bar_beta` must lie in [0, 1] at every step")
        self._bb = bb
        log_k = math.log(self.classes)
        self._log_hit = torch.log1p(-bb * (1 - 1 / self.classes))                   # log(1 − β̄ + β̄/K)
        self._log_miss = torch.log(bb.clamp(min=torch.finfo(torch.float64).tiny)) - log_k  # log(β̄/K)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        return (self.length,)

    def _probs(self, x0: Tensor, t: Tensor) -> Tensor:
        """p_t(x0) = (1 − β̄_t) x0 + β̄_t/K in float64, shape (B, L, K)."""
        bb = self._bb[t].reshape(-1, 1, 1)
        return (1 - bb) * x0.to(torch.float64) + bb / self.classes

    def _log_probs(self, x0: Tensor, t: Tensor) -> Tensor:
        """log p_t(x0) in log space: logaddexp(log(1 − β̄) + log x0, log(β̄/K))."""
        log1m = torch.log1p(-self._bb[t]).reshape(-1, 1, 1)
        return torch.logaddexp(log1m + torch.log(x0.to(torch.float64)), self._log_miss[t].reshape(-1, 1, 1))

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """Class = #{boundaries C_k ≤ Φ(ξ)}: boundaries below ½ compared in u = Φ(ξ), those above
        in 1 − u = Φ(−ξ) against the reverse sums S_k = Σ_{i>k} p_i."""
        t = self._steps(t, xi.shape[0])
        p = self._probs(x0, t)
        lower = torch.cumsum(p, -1)[..., :-1]                        # C_k, k = 0..K−2
        upper = torch.flip(torch.cumsum(torch.flip(p, [-1]), -1), [-1])[..., 1:]  # S_k = Σ_{i>k} p_i
        xi = xi.to(torch.float64)[..., None]
        u_lo, u_up = _ndtr(xi), _ndtr(-xi)
        crossed = torch.where(lower < 0.5, u_lo >= lower, u_up <= upper)
        cls = crossed.sum(-1)
        return torch.nn.functional.one_hot(cls, self.classes).to(x0.dtype)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int,
                 generator: torch.Generator | None = None) -> Tensor:
        """ξ = Φ⁻¹(u), u uniform in the interval of x's class (auxiliary draw from ``generator``)."""
        t = self._steps(t, x.shape[0])
        p = self._probs(x0, t)
        cls = x.argmax(-1, keepdim=True)
        zero = torch.zeros_like(p[..., :1])
        before = torch.cat([zero, torch.cumsum(p, -1)[..., :-1]], -1).gather(-1, cls)[..., 0]
        after = torch.cat([torch.flip(torch.cumsum(torch.flip(p, [-1]), -1), [-1])[..., 1:], zero], -1)
        after = after.gather(-1, cls)[..., 0]
        width = p.gather(-1, cls)[..., 0]
        v = torch.rand(before.shape, generator=generator, dtype=torch.float64, device=x.device) + 2.0 ** -54
        u_lo = before + v * width          # u
        u_up = after + (1 - v) * width     # 1 − u
        xi = torch.where(u_lo < 0.5, torch.special.ndtri(u_lo), -torch.special.ndtri(u_up))
        return xi.to(x.dtype)

    def kernel_probs(self, x_t: Tensor, x0: Tensor, t: Tensor | int, rho: Tensor, nodes: int = 48) -> Tensor:
        """Class probabilities of the coupled kernel k_t(x_{t-1} | x_t, x0), shape (B, L, K).

        With u uniform in the interval [lo, hi] of x_t's class under q_t(· | x0) (width w) and
        ξ_t = Φ⁻¹(u), ξ' = ρ ξ_t + sqrt(1 − ρ²) ε falls in class y of q_{t-1}(· | x0) when
        Φ(ξ') ∈ [C_{y-1}, C_y):

            k(y) = (1/w) ∫_lo^hi [F_y(u) − F_{y-1}(u)] du,   F_k(u) = Φ((Φ⁻¹(C_k) − ρ Φ⁻¹(u)) / sqrt(1 − ρ²)),

        an exact sum over classes with a Gauss–Legendre quadrature (``nodes`` points) over u.
        Differentiable in ρ (ρ < 1; a (B,) tensor or a scalar).
        """
        batch = x_t.shape[0]
        t = self._steps(t, batch)
        rho = torch.as_tensor(rho, dtype=torch.float64, device=x_t.device).expand(batch).reshape(-1, 1, 1, 1)
        p_t = self._probs(x0, t)
        cls = x_t.argmax(-1, keepdim=True)
        before = torch.cat([torch.zeros_like(p_t[..., :1]), torch.cumsum(p_t, -1)[..., :-1]], -1).gather(-1, cls)
        width = p_t.gather(-1, cls)                                          # (B, L, 1)
        g_nodes, g_weights = np.polynomial.legendre.leggauss(nodes)
        g_nodes = torch.as_tensor((g_nodes + 1) / 2, dtype=torch.float64, device=x_t.device)
        g_weights = torch.as_tensor(g_weights / 2, dtype=torch.float64, device=x_t.device)
        u = (before + width * g_nodes).clamp(1e-300, 1 - 1e-16)             # (B, L, nodes)
        z_t = torch.special.ndtri(u)[..., None]                              # (B, L, nodes, 1)
        bounds = torch.cumsum(self._probs(x0, t - 1), -1)[..., :-1]          # C_k, k = 0..K−2
        z_b = torch.special.ndtri(bounds.clamp(1e-300, 1 - 1e-16))[:, :, None, :]  # (B, L, 1, K−1)
        cdf = _ndtr((z_b - rho * z_t) / torch.sqrt(1 - rho * rho))          # (B, L, nodes, K−1)
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf, torch.ones_like(cdf[..., :1])], -1)
        probs = (cdf[..., 1:] - cdf[..., :-1]).clamp(min=0.0)                # (B, L, nodes, K)
        return (probs * g_weights[:, None]).sum(-2)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """Σ_positions log p_t(x0)[class of x] (x0 may be a probability vector)."""
        t = self._steps(t, x.shape[0])
        lp = self._log_probs(x0, t)
        return torch.where(x > 0, x.to(torch.float64) * lp, 0.0).sum((1, 2)).to(x.dtype)

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """Σ p log(p / p̂) = Σ p log1p((p − p̂)/p̂), p − p̂ = (1 − β̄_t)(x0 − x̂0)."""
        t = self._steps(t, x0.shape[0])
        dtype = torch.promote_types(x0.dtype, x0_hat.dtype)
        bb = self._bb[t].reshape(-1, 1, 1).to(dtype)
        p = (1 - bb) * x0.to(dtype) + bb / self.classes
        p_hat = (1 - bb) * x0_hat.to(dtype) + bb / self.classes
        diff = (1 - bb) * (x0.to(dtype) - x0_hat.to(dtype))
        live = p > 0  # terms with p = 0 are 0; mask their inputs so that no NaN reaches the gradient
        ratio = torch.where(live, diff, 0.0) / torch.where(live, p_hat, 1.0)
        return (p * torch.log1p(ratio)).sum((1, 2))

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """ℓ_t(x)_k = log q_t(x | x0 = e_k) = x_k log(1 − β̄ + β̄/K) + (1 − x_k) log(β̄/K)."""
        t = self._steps(t, x.shape[0])
        hit = self._log_hit[t].reshape(-1, 1, 1).to(x.dtype)
        miss = self._log_miss[t].reshape(-1, 1, 1).clamp(min=math.log(torch.finfo(x.dtype).tiny)).to(x.dtype)
        return x * hit + (1 - x) * miss

    def normalise_stat(self, s: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """softmax(s_t) over the K classes: the posterior q(x0 | x_{t:T}) under a uniform prior,
        which keeps sufficiency (SS-DDPM App. F.4); the per-step statistics are not used."""
        return torch.softmax(s, dim=-1)

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t = 0: ``stat`` already holds normalised log-likelihoods."""
        return x0.new_zeros(x0.shape[0])

    # ------------------------------------------------------------------ prior, head, domain
    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Uniform classes, one-hot."""
        cls = torch.randint(self.classes, (n, self.length), generator=generator, device=device)
        return torch.nn.functional.one_hot(cls, self.classes).to(dtype)

    def head(self, raw: Tensor) -> Tensor:
        """softmax over the K classes: x̂0 is a probability vector per position."""
        return torch.softmax(raw, dim=-1)

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        if x.ndim < 2 or tuple(x.shape[-2:]) != self.event_shape:
            raise self._domain_error(what, f"expected trailing shape {self.event_shape} (positions, classes), "
                                           f"got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise self._domain_error(what, "it contains NaN or infinite values")
        tol = 1e-6 if x.dtype == torch.float64 else 1e-4
        if bool((x < -tol).any()) or bool((x > 1 + tol).any()):
            raise self._domain_error(what, f"entries must lie in [0, 1] (range seen [{float(x.min()):.4g}, "
                                           f"{float(x.max()):.4g}]); encode tokens with one_hot(index, K)")
        dev = (x.to(torch.float64).sum(-1) - 1).abs()
        if bool((dev > tol).any()):
            raise self._domain_error(what, f"{int((dev > tol).sum())} position(s) do not sum to 1 over the "
                                           f"K = {self.classes} classes; encode tokens with one_hot(index, K)")
