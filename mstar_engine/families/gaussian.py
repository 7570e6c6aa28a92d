"""Gaussian family: q_t(x | x0) = N(m_t x0, v_t I) (MATH.md §1, §2 "Gaussian case, exact", §4).

Exponential-family pieces: T(x) = x, A_t = m_t / v_t, f(x0) = x0, so the tail statistic is
s_t = Σ_{k≥t} (m_k / v_k) x_k, and

    log q_t(x | x0) = <x0, (m_t/v_t) x> − m_t² ‖x0‖² / (2 v_t) − ‖x‖² / (2 v_t) − (D/2) log(2π v_t),

i.e. Ω_t(x0) = m_t² ‖x0‖² / (2 v_t) and c_t(x) = −‖x‖²/(2 v_t) − (D/2) log(2π v_t).

With DDPM marginals (m_t² = ᾱ_t, v_t = 1 − ᾱ_t) this is DDPM; with the star-shaped equivalent
schedule (SNR^SS_t = SNR^DDPM_t − SNR^DDPM_{t+1}) it is the Gaussian SS-DDPM of Theorem 2.

The module also holds the closed forms of the Gaussian coupled kernel (pure functions of the
schedule, used by the ``ddpm``/``learned`` couplings and as test oracles).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mstar_engine.families.base import LOG_2PI, Family, ScheduleValueError, as_steps, per_step, register


# ---------------------------------------------------------------------------------------------
# The exact Gaussian coupled kernel (MATH.md §2 "Gaussian case, exact")
# ---------------------------------------------------------------------------------------------
def coupled_kernel_params(m_prev: Tensor, v_prev: Tensor, m_t: Tensor, v_t: Tensor,
                          rho: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Coefficients (a, b, var) of the Gaussian coupled kernel

        k_t(x_{t-1} | x_t, x0) = N( a x0 + b x_t, var I ),
        b = ρ sqrt(v_{t-1}/v_t),  a = m_{t-1} − b m_t,  var = v_{t-1}(1 − ρ²),

    which is what ``coupled_step`` draws for this family (ξ_t = (x_t − m_t x0)/sqrt(v_t)).
    """
    b = rho * torch.sqrt(v_prev / v_t)
    return m_prev - b * m_t, b, v_prev * (1 - rho * rho)


def coupled_kernel_kl(m_prev: Tensor, v_prev: Tensor, m_t: Tensor, v_t: Tensor, rho: Tensor,
                      sq_dist: Tensor) -> Tensor:
    """KL( k_t(· | x_t, x0) ‖ k_t(· | x_t, x̂0) ) for the Gaussian coupled kernel:

        (m_{t-1} − ρ m_t sqrt(v_{t-1}/v_t))² ‖x0 − x̂0‖² / (2 v_{t-1} (1 − ρ²)),

    with ``sq_dist`` = ‖x0 − x̂0‖². It does not depend on x_t. At ρ = 0 it is the star-shaped KL
    m_{t-1}² ‖x0 − x̂0‖² / (2 v_{t-1}); at its minimiser ρ* (:func:`optimal_rho`) it equals
    ½ (SNR_{t-1} − SNR_t) ‖x0 − x̂0‖², the DDPM term. At ρ = 1 the kernel is deterministic: the KL
    is +inf unless the mean gap (numerator) is zero, where it is returned as 0.
    """
    gap = (m_prev - rho * m_t * torch.sqrt(v_prev / v_t)) ** 2 * sq_dist
    denom = 2 * v_prev * (1 - rho * rho)
    return torch.where(gap == 0, torch.zeros_like(gap), gap / denom)


def optimal_rho(snr_t: Tensor, snr_prev: Tensor) -> Tensor:
    """ρ*_t = sqrt(SNR_t / SNR_{t-1}), the minimiser over ρ ∈ [0, 1] of :func:`coupled_kernel_kl`
    (clamped to [0, 1]; a non-decreasing SNR gives ρ* = 1)."""
    return torch.sqrt(snr_t / snr_prev).clamp(0.0, 1.0)


def interaction(v_prev: Tensor, v_t: Tensor, rho: Tensor) -> Tensor:
    """Interaction coefficient of the coupled kernel (cross term of the joint precision of
    (x_{t-1}, x_t) given x0): M_t = ρ / (sqrt(v_{t-1} v_t) (1 − ρ²)). With DDPM marginals and
    ρ = ρ* it equals sqrt(α_t) / β_t."""
    return rho / (torch.sqrt(v_prev * v_t) * (1 - rho * rho))


# ---------------------------------------------------------------------------------------------
@register
class Gaussian(Family):
    """q_t(x | x0) = N(m_t x0, v_t I) with schedule arrays ``mean`` (m_t) and ``var`` (v_t > 0).

    * Noise map: x = m_t x0 + sqrt(v_t) ξ; ``to_noise`` is its exact inverse (no auxiliary draws).
    * KL(q_t(x0) ‖ q_t(x̂0)) = m_t² ‖x0 − x̂0‖² / (2 v_t).
    * ``kl_rescaled`` = ‖x0 − x̂0‖² (summed over the event): the x0-MSE, the L_simple analogue
      of an x0-predicting model (the KL divided by SNR_t / 2).
    * Head: identity (x̂0 is unconstrained in R^d).
    * Prior: N(0, I) — the limit of q_T for m_T → 0, v_T → 1 (DDPM and its star-shaped
      equivalent both end there); it is the DDPM prior, which the sampling oracles rely on.
    """

    name = "gaussian"
    summary = "Gaussian N(m_t x0, v_t I): DDPM marginals or their star-shaped equivalent"
    domain = "real"
    schedule_params = ("mean", "var")
    coordinatewise = True
    closed_form_kernel_kl = draws_exact_tail = affine_in_x0 = predicts_noise = True
    schedules = ("ss-cosine", "cosine", "ss-linear", "linear")
    custom_primary = "alpha_bar"

    @classmethod
    def default_schedule(cls, coupling: str) -> str:
        """The star-shaped equivalent of the cosine DDPM for the independent (star-shaped) coupling,
        the cosine DDPM schedule itself for coupled processes."""
        return "ss-cosine" if coupling == "independent" else "cosine"

    @classmethod
    def pseudo_step(cls, params: dict[str, np.ndarray]) -> dict[str, float]:
        """ᾱ_0 = (1 + ᾱ_1)/2 with ᾱ_1 = m_1², and v_0 = v_1/2 (the published code's choice; for
        variance-preserving schedules v_0 = 1 − ᾱ_0): noise halved, never zero."""
        m1, v1 = params["mean"][0], params["var"][0]
        return {"mean": float(np.sqrt((1 + m1 ** 2) / 2)), "var": float(v1 / 2)}

    @classmethod
    def schedule_from_primary(cls, values: np.ndarray, fill: dict, first_step: int) -> dict:
        """ᾱ_t in (0, 1): mean = sqrt(ᾱ), var = 1 − ᾱ."""
        bad = np.flatnonzero(~((values > 0) & (values < 1)))
        if bad.size:
            raise ScheduleValueError("alpha_bar", "in (0, 1) (the Gaussian family needs var = 1 − ᾱ > 0)",
                                     int(bad[0]) + first_step, float(values[bad[0]]))
        return {"mean": np.sqrt(values), "var": 1 - values}

    @staticmethod
    def kl_snr(params: dict, shape: tuple[int, ...]) -> np.ndarray:
        """m²/v, the SNR exactly, for any reference data (the KL is m² ‖x0 − x0'‖² / (2v))."""
        return np.asarray(params["mean"], dtype=np.float64) ** 2 / np.asarray(params["var"], dtype=np.float64)

    @staticmethod
    def kl_snr_path(lam: np.ndarray, shape: tuple[int, ...]) -> dict:
        """λ = SNR, variance preserving."""
        return {"mean": np.sqrt(lam / (1 + lam)), "var": 1 / (1 + lam)}

    def __init__(self, event_shape: tuple[int, ...], **schedule: Tensor) -> None:
        super().__init__(event_shape, **schedule)
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.var).all()):
            raise ValueError("gaussian schedule: `mean` and `var` must be finite at every step")
        if not bool((self.var > 0).all()):
            raise ValueError("gaussian schedule: `var` must be > 0 at every step, the pseudo step 0 "
                             "included (use a small positive value there, e.g. 1 − ᾱ_0 with ᾱ_0 < 1)")

    # ------------------------------------------------------------------ helpers
    def _mv(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        m = per_step(self.mean, t, like.ndim).to(dtype=like.dtype, device=like.device)
        v = per_step(self.var, t, like.ndim).to(dtype=like.dtype, device=like.device)
        return m, v

    @staticmethod
    def _sum(z: Tensor) -> Tensor:
        return z.flatten(1).sum(1)

    # ------------------------------------------------------------------ noise maps
    def from_noise(self, xi: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """x = m_t x0 + sqrt(v_t) ξ."""
        t = as_steps(t, xi.shape[0], self.mean.device)
        m, v = self._mv(t, x0)
        return m * x0 + torch.sqrt(v) * xi.to(x0.dtype)

    def to_noise(self, x: Tensor, x0: Tensor, t: Tensor | int,
                 generator: torch.Generator | None = None) -> Tensor:
        """ξ = (x − m_t x0) / sqrt(v_t): the exact inverse (``generator`` is unused)."""
        t = as_steps(t, x.shape[0], self.mean.device)
        m, v = self._mv(t, x)
        return (x - m * x0) / torch.sqrt(v)

    # ------------------------------------------------------------------ densities and KL
    def log_prob(self, x: Tensor, x0: Tensor, t: Tensor | int) -> Tensor:
        """log N(x; m_t x0, v_t I), summed over the event."""
        t = as_steps(t, x.shape[0], self.mean.device)
        m, v = self._mv(t, x)
        return self._sum(-0.5 * ((x - m * x0) ** 2 / v + LOG_2PI + torch.log(v)))

    def kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """KL = m_t² ‖x0 − x̂0‖² / (2 v_t)."""
        t = as_steps(t, x0.shape[0], self.mean.device)
        m, v = self._mv(t, x0)
        return self._sum(m * m / (2 * v) * (x0 - x0_hat) ** 2)

    def kl_rescaled(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int) -> Tensor:
        """‖x0 − x̂0‖² (summed over the event): the KL divided by SNR_t / 2, i.e. x0-MSE."""
        return self._sum((x0 - x0_hat) ** 2)

    def coupled_kl(self, x0: Tensor, x0_hat: Tensor, t: Tensor | int, rho: Tensor | float) -> Tensor:
        """KL of the coupled kernels k_t(· | x_t, x0) ‖ k_t(· | x_t, x̂0) (steps t ≥ 1), shape (B,).
        ``rho`` is a float or a per-example tensor (B,). See :func:`coupled_kernel_kl`."""
        t = as_steps(t, x0.shape[0], self.mean.device)
        rho = torch.as_tensor(rho, dtype=x0.dtype, device=x0.device).expand(x0.shape[0])
        cast = dict(dtype=x0.dtype, device=x0.device)
        return coupled_kernel_kl(self.mean[t - 1].to(**cast), self.var[t - 1].to(**cast),
                                 self.mean[t].to(**cast), self.var[t].to(**cast), rho,
                                 self._sum((x0 - x0_hat) ** 2))

    # ------------------------------------------------------------------ exponential-family pieces
    def stat(self, x: Tensor, t: Tensor | int) -> Tensor:
        """A_t T(x) = (m_t / v_t) x."""
        t = as_steps(t, x.shape[0], self.mean.device)
        m, v = self._mv(t, x)
        return (m / v) * x

    def tail_moments(self, rho: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """For the chain ξ_T ~ N(0, I), ξ_{k-1} = ρ_k ξ_k + sqrt(1 − ρ_k²) ε (x_k = m_k x0 + σ_k ξ_k),
        the tail statistic is s_t = S_t x0 + U_t with S_t = Σ_{k≥t} m_k² / v_k and
        U_t = Σ_{k≥t} c_k ξ_k, c_k = m_k / σ_k. Returns (S_t, b_t, w_t), length T + 2, with
        b_t = Cov(ξ_t, U_t) = c_t + ρ_{t+1} b_{t+1} and w_t = Var U_t = c_t² + 2 c_t ρ_{t+1} b_{t+1} + w_{t+1}
        per coordinate (b_{T+1} = w_{T+1} = 0): the exact joint law of (x_t, s_t) given x0."""
        T = self.steps
        r = [0.0] * (T + 2) if rho is None else [*rho.detach().to("cpu", torch.float64).tolist(), 0.0]
        key = tuple(r)
        cache = self.__dict__.setdefault("_tail_moments", {})
        if key not in cache:
            m, v = self.mean.to("cpu", torch.float64).tolist(), self.var.to("cpu", torch.float64).tolist()
            S, b, w = [0.0] * (T + 2), [0.0] * (T + 2), [0.0] * (T + 2)
            for t in range(T, 0, -1):
                c = m[t] / math.sqrt(v[t])
                S[t] = S[t + 1] + m[t] ** 2 / v[t]
                b[t] = c + r[t + 1] * b[t + 1]
                w[t] = c * c + 2 * c * r[t + 1] * b[t + 1] + w[t + 1]
            if len(cache) > 8:  # a learned coupling changes ρ; keep the newest few
                cache.clear()
            cache[key] = tuple(torch.tensor(a, dtype=torch.float64) for a in (S, b, w))
        return cache[key]

    def exact_tail(self, x0: Tensor, t: Tensor, rho: Tensor | None,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(x_t, s_t) drawn from their exact joint law given x0 (see :meth:`tail_moments`): two
        normal draws per coordinate instead of simulating the chain from T down to t."""
        S, b, w = (a.to(device=x0.device, dtype=x0.dtype) for a in self.tail_moments(rho))
        m, v = self._mv(t, x0)
        z1 = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        z2 = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        bt, wt, St = (per_step(a, t, x0.ndim) for a in (b, w, S))
        u = bt * z1 + torch.sqrt(torch.clamp(wt - bt * bt, min=0.0)) * z2
        return m * x0 + torch.sqrt(v) * z1, St * x0 + u

    def log_normalizer(self, x0: Tensor, t: Tensor | int) -> Tensor:
        """Ω_t(x0) = m_t² ‖x0‖² / (2 v_t)."""
        t = as_steps(t, x0.shape[0], self.mean.device)
        m, v = self._mv(t, x0)
        return self._sum(m * m / (2 * v) * x0 * x0)

    def gaussian_snr(self) -> Tensor:
        """SNR_t = m_t² / v_t for t = 0..T (finite at the pseudo step 0 because v_0 > 0)."""
        return self.mean ** 2 / self.var

    # ------------------------------------------------------------------ prior, head, domain
    def coupling_metrics(self, rho: Tensor) -> dict[str, float]:
        """``interaction_rel_error`` = ‖M − M*‖ / ‖M*‖ over t = 2..T (MATH.md §2, oracle (c)): M_t the
        interaction of the given ρ_t, M*_t that of the kernel KL's minimiser ρ*_t = sqrt(SNR_t/SNR_{t−1}),
        which is sqrt(α_t)/β_t with DDPM marginals. Step 1 is left out: its partner is the pseudo step 0."""
        mean, var = self.mean.detach().double().cpu(), self.var.detach().double().cpu()
        rho = rho.detach().double().cpu()
        snr = mean ** 2 / var
        m_star = interaction(var[1:-1], var[2:], optimal_rho(snr[2:], snr[1:-1]))
        m = interaction(var[1:-1], var[2:], rho[2:])
        return {"interaction_rel_error": float(torch.linalg.vector_norm(m - m_star) / torch.linalg.vector_norm(m_star))}

    def prior_sample(self, n: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """n draws of N(0, I)."""
        return torch.randn((n, *self.event_shape), generator=generator, device=device, dtype=dtype)

    def head(self, raw: Tensor) -> Tensor:
        """Identity: x̂0 = raw."""
        return raw

    def check_domain(self, x: Tensor, what: str = "data") -> None:
        n = len(self.event_shape)
        if tuple(x.shape[x.ndim - n:]) != self.event_shape or x.ndim < n:
            raise self._domain_error(what, f"expected trailing shape {self.event_shape}, got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise self._domain_error(what, f"{bad} value(s) are NaN or infinite")
