"""Published schedules found by mutual-information matching: ``beta-cosine`` (notes §3.2) and
``categorical-d3pm`` (notes §3.6). The published arrays (``nu_t_as_cosine.npy``,
``cum_beta_t.npy``) are not available; both are re-derived here by deterministic quadrature.

beta-cosine (the published procedure, SS-DDPM App. G, with exact MI instead of estimators):
ν_t solves I_beta(ν_t) = I_gauss(SNR^SS_t), t = 1..T, where SNR^SS is ``ss-cosine`` for the same T
and both MIs are I(x0; x_t) of one coordinate with x0 ~ Beta(c, c), c = 1.5 (mean 1/2, standard
deviation 1/4 like CIFAR-10 pixels), computed by :mod:`.mutual_information`. Both MI curves are
tabulated on log grids (12 nodes per decade) and inverted with cubic splines in log–log
coordinates (error < 1e-4 relative in ν against direct root finding). Pseudo step ν_0 = ν_1 + 2.
Against the published table (T = 1000) this is within 0.5 % at t = 1, 2 and 501 (+0.31 %,
−0.33 %, −0.44 %), and off by −7.5 % (t = 11), +8.8 % (101), +7.1 % (251), −4.9 % (751),
−13.2 % (1000). The last is forced: at
low information both MIs are proportional to Var x0, I_beta ≈ ν² π² Var/6 and I_gauss ≈ 2 SNR Var,
so any exact x_t matching gives ν = sqrt(12 SNR/π²) = 1.72e-3 at t = 1000, whatever the data
distribution; the published 1.98e-3 comes from the extrapolated fit the paper used below
I = 0.002 nats (t ≳ 500). The middle of the table came from Monte Carlo (DSIVI/Kraskov)
estimates; exact MI cannot reproduce their bias there.

categorical-d3pm: the published schedule matches I(x0; G_t) of the star-shaped tail to I(x0; x_t)
of the D3PM cosine baseline (uniform transitions, ᾱ^D_t = cos(u_t)/cos(u_0) with
u_t = (t/(T+1) + s)/(1 + s) · π/2, s = 0.008, unsquared as in the published D3PM code), K = 27.
Here, with x0 uniform over K classes:

1. I^D_t = log K − H((1 − β̄^D_t) e + β̄^D_t/K), β̄^D_t = 1 − ᾱ^D_t (closed form).
2. γ_t = the SNR of a Gaussian channel on one-hot vectors carrying I^D_t nats
   (:mod:`.onehot_channel`, exact up to quadrature).
3. Theorem 2 in that Gaussian picture: the star-shaped step t gets γ_t − γ_{t+1} (γ_{T+1} = 0),
   since pairwise KLs (the SNR of a Gaussian channel) of independent observations add.
4. β̄_t solves SNR_KL(β̄_t) = (1 − β̄_t) log(1 + K(1 − β̄_t)/β̄_t) = γ_t − γ_{t+1}
   (the categorical KL-SNR of :mod:`.kl_snr`; bisection). Pseudo step β̄_0 = 0.

So the tail's pairwise KL equals that of a Gaussian channel with the D3PM step's information,
which is exact in the weak-observation limit (late steps) and an approximation of the published
Monte Carlo I(x0; G_t) matching elsewhere. Against the table (T = 1000): t = 501 and 1000 within
0.2 % (−0.17 %, −0.16 % against 1.0), t = 101 +0.93 %, t = 11 −9.0 %, t = 1 −62 % (β̄_1 = 0.324
instead of 0.858). At t ≲ 20 the
D3PM x_t is within 1e-3 nats of log K and exact MI matching is ill-conditioned; brute-force Monte
Carlo matching (Rao-Blackwellised over the current draw, 2000 paths) gives β̄_1 between 0.28 and
1.0 and β̄_11 between 0.79 and 0.93 depending on the seed, so the published β̄_1 ≈ β̄_11 ≈ 0.86
reflects the estimator, not the information.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import CubicSpline

from mstar_engine.util import cache as schedule_cache
from mstar_engine.schedules.gaussian import COSINE_S, gaussian_snr
from mstar_engine.schedules.kl_snr import Params
from mstar_engine.schedules.matching import match_snr
from mstar_engine.schedules.mutual_information import (
    DEFAULT_C,
    beta_channel_mi,
    gaussian_channel_mi,
    reference_variance,
)
from mstar_engine.schedules.onehot_channel import OnehotInverse
from mstar_engine.schedules.pseudo import with_pseudo_step

PER_DECADE = 12
TEXT8_CLASSES = 27


def _log_grid(lo: float, hi: float, per_decade: int = PER_DECADE) -> np.ndarray:
    n = max(4, int(np.ceil(per_decade * np.log10(hi / lo))) + 1)
    return np.logspace(np.log10(lo), np.log10(hi), n)


def _spline_loglog(x: np.ndarray, y: np.ndarray) -> CubicSpline:
    return CubicSpline(np.log(x), np.log(y))


def beta_nu_for_info(info: np.ndarray, c: float = DEFAULT_C) -> np.ndarray:
    """ν with I_beta(ν) = info (nats), through a tabulated and inverted MI curve."""
    info = np.asarray(info, dtype=np.float64)
    var = reference_variance(c)
    # brackets: the low-information law I ≈ ν² π² Var / 6 and I ≲ h(x0) + ½ log ν (high)
    lo = 0.5 * np.sqrt(6 * info.min() / (np.pi ** 2 * var))
    hi = 4.0 * np.exp(2 * info.max()) + 10.0
    nus = _log_grid(lo, hi)
    mis = np.array([beta_channel_mi(nu, c) for nu in nus])
    if not (np.all(np.diff(mis) > 0) and mis[0] < info.min() and mis[-1] > info.max()):
        raise RuntimeError("beta MI table is not increasing or does not bracket the targets")
    inverse = CubicSpline(np.log(mis), np.log(nus))
    return np.exp(inverse(np.log(info)))


def gaussian_info(snr: np.ndarray, c: float = DEFAULT_C) -> np.ndarray:
    """I_gauss(SNR) (nats) through a tabulated MI curve."""
    snr = np.asarray(snr, dtype=np.float64)
    grid = _log_grid(snr.min() / 1.5, snr.max() * 1.5)
    mis = np.array([gaussian_channel_mi(s, c) for s in grid])
    return np.exp(_spline_loglog(grid, mis)(np.log(snr)))


def build_beta_cosine(steps: int, x0_concentration: float = DEFAULT_C, cache: bool = True) -> Params:
    key = {"schedule": "beta-cosine", "steps": int(steps), "c": float(x0_concentration)}

    def build() -> Params:
        snr = gaussian_snr("ss-cosine", steps)[1:]
        nu = beta_nu_for_info(gaussian_info(snr, x0_concentration), x0_concentration)
        return with_pseudo_step("beta", {"nu": nu})

    return schedule_cache.cached(key, build, use_cache=cache)


def d3pm_cosine_bar_beta(steps: int) -> np.ndarray:
    """β̄^D_t = 1 − ᾱ^D_t, t = 1..T, of the published D3PM cosine baseline (see the module docstring)."""
    t = np.arange(0, steps + 1, dtype=np.float64)
    u = (t / (steps + 1) + COSINE_S) / (1 + COSINE_S) * (np.pi / 2)
    # 1 − cos u_t / cos u_0 = 2 sin((u_t − u_0)/2) sin((u_t + u_0)/2) / cos u_0, no cancellation
    return 2 * np.sin((u[1:] - u[0]) / 2) * np.sin((u[1:] + u[0]) / 2) / np.cos(u[0])


def categorical_info(bar_beta: np.ndarray, classes: int) -> np.ndarray:
    """I(x0; x) for x0 uniform over K classes and x ~ Cat((1 − β̄) x0 + β̄/K): log K − H(row)."""
    bb = np.asarray(bar_beta, dtype=np.float64)
    k = classes
    a, b = 1 - bb + bb / k, bb / k
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -a * np.log(a) - np.where(b > 0, (k - 1) * b * np.log(b), 0.0)
    return np.log(k) - h


def build_categorical_d3pm(steps: int, classes: int = TEXT8_CLASSES, cache: bool = True) -> Params:
    key = {"schedule": "categorical-d3pm", "steps": int(steps), "classes": int(classes)}

    def build() -> Params:
        info = categorical_info(d3pm_cosine_bar_beta(steps), classes)
        gamma = OnehotInverse(classes)(info)
        increments = gamma - np.append(gamma[1:], 0.0)
        if np.any(increments <= 0):
            raise RuntimeError("categorical-d3pm: the Gaussian-equivalent SNR is not decreasing in t")
        params = match_snr("categorical", increments, (1, classes))
        return with_pseudo_step("categorical", params)

    return schedule_cache.cached(key, build, use_cache=cache)
