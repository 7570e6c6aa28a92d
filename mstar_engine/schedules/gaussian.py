"""Gaussian schedules: the DDPM ``linear`` and ``cosine`` schedules and their star-shaped
equivalents ``ss-linear`` and ``ss-cosine`` (MATH.md §1 Theorem 2, notes §3.1).

All arrays have length T + 1, index t = 0..T, index 0 being the pseudo step. The Gaussian family
takes ``mean`` = m_t and ``var`` = v_t with the variance-preserving pairing m_t = sqrt(ᾱ_t),
v_t = 1 − ᾱ_t, so SNR_t = m_t² / v_t = ᾱ_t / (1 − ᾱ_t).

DDPM schedules (t = 1..T):

* linear (Ho et al.; scaled as in Nichol & Dhariwal): β_t = linspace(1e-4 · 1000/T, 0.02 · 1000/T)
  clipped to at most 0.999 (only bites for T < 21), ᾱ_t = Π_{s≤t} (1 − β_s).
* cosine (Nichol & Dhariwal, s = 0.008): ᾱ_t = f(t)/f(0), f(t) = cos²((t/(T+1) + s)/(1 + s) · π/2).
  The denominator T + 1 is the convention of the published SS-DDPM code (notes §3.1); it keeps
  ᾱ_T > 0 without clipping. ``plus_one=False`` gives the original t/T with β_t clipped to 0.999.

Pseudo step of a DDPM schedule: ᾱ_0 = (1 + ᾱ_1)/2 (the published code's choice), i.e. half-way
between the clean data and step 1: v_0 = v_1 / 2 > 0, so the t = 1 KL term stays finite.

Star-shaped equivalent (Theorem 2): SNR^SS_t = SNR^D_t − SNR^D_{t+1} with SNR^D_{T+1} := 0, for
t = 0..T, so that Σ_{s≥t} SNR^SS_s = SNR^D_t for every t (the tail statistic of the star-shaped
process is then distributed as DDPM's x_t). At t = 0 this uses the DDPM pseudo step above, which
is the entry the published code computes and drops (notes §3.1): SNR^SS_0 = SNR^D_0 − SNR^D_1.
m and v are computed from the SNR as m² = SNR/(1 + SNR), v = 1/(1 + SNR), exact in float64 even
where ᾱ^SS_t is within 1e-12 of 1.
"""
from __future__ import annotations

import numpy as np

COSINE_S = 0.008


def linear_alpha_bar(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(ᾱ_t, 1 − ᾱ_t) for t = 1..T of the linear DDPM schedule, float64, both computed stably."""
    check_steps(steps)
    scale = 1000.0 / steps
    beta = np.minimum(np.linspace(1e-4 * scale, 0.02 * scale, steps, dtype=np.float64), 0.999)
    log_abar = np.cumsum(np.log1p(-beta))
    return np.exp(log_abar), -np.expm1(log_abar)


def cosine_alpha_bar(steps: int, plus_one: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ᾱ_t, 1 − ᾱ_t) for t = 1..T of the cosine DDPM schedule (see the module docstring)."""
    check_steps(steps)
    t = np.arange(0, steps + 1, dtype=np.float64)
    denom = steps + 1 if plus_one else steps
    angle = (t / denom + COSINE_S) / (1 + COSINE_S) * (np.pi / 2)
    f = np.cos(angle) ** 2
    if plus_one:
        abar = f[1:] / f[0]
        # 1 − cos²a/cos²a0 = (cos²a0 − cos²a)/cos²a0 = sin(a − a0) sin(a + a0)/cos²a0, no cancellation
        one_minus = np.sin(angle[1:] - angle[0]) * np.sin(angle[1:] + angle[0]) / f[0]
        return abar, one_minus
    beta = np.minimum(1 - f[1:] / np.maximum(f[:-1], 1e-300), 0.999)
    log_abar = np.cumsum(np.log1p(-beta))
    return np.exp(log_abar), -np.expm1(log_abar)


def ddpm_snr(abar: np.ndarray, one_minus: np.ndarray) -> np.ndarray:
    """SNR_t for t = 0..T of a DDPM schedule given ᾱ_t, 1 − ᾱ_t for t = 1..T, with the pseudo step
    ᾱ_0 = (1 + ᾱ_1)/2, i.e. 1 − ᾱ_0 = (1 − ᾱ_1)/2."""
    abar0, one_minus0 = (1 + abar[0]) / 2, one_minus[0] / 2
    return np.concatenate([[abar0 / one_minus0], abar / one_minus])


def star_shaped_snr(snr_ddpm: np.ndarray) -> np.ndarray:
    """Theorem 2: SNR^SS_t = SNR^D_t − SNR^D_{t+1} (SNR^D_{T+1} := 0), for every index of the input."""
    snr_ddpm = np.asarray(snr_ddpm, dtype=np.float64)
    return snr_ddpm - np.append(snr_ddpm[1:], 0.0)


def from_snr(snr: np.ndarray) -> dict[str, np.ndarray]:
    """Variance-preserving Gaussian parameters from an SNR array: m = sqrt(SNR/(1+SNR)), v = 1/(1+SNR)."""
    snr = np.asarray(snr, dtype=np.float64)
    return {"mean": np.sqrt(snr / (1 + snr)), "var": 1 / (1 + snr)}


def from_alpha_bar(abar: np.ndarray, one_minus: np.ndarray) -> dict[str, np.ndarray]:
    """Gaussian parameters (t = 0..T) of a DDPM schedule given ᾱ_t and 1 − ᾱ_t for t = 1..T."""
    abar = np.concatenate([[(1 + abar[0]) / 2], abar])
    one_minus = np.concatenate([[one_minus[0] / 2], one_minus])
    return {"mean": np.sqrt(abar), "var": one_minus}


def ddpm_alpha_bar(name: str, steps: int, **options) -> tuple[np.ndarray, np.ndarray]:
    if name == "linear":
        return linear_alpha_bar(steps)
    if name == "cosine":
        return cosine_alpha_bar(steps, plus_one=options.get("plus_one", True))
    raise KeyError(f"no DDPM schedule named {name!r}; known: linear, cosine")


def ddpm_schedule_snr(name: str, steps: int, **options) -> np.ndarray:
    """SNR_t, t = 0..T, of the DDPM schedule ``name`` ("linear" or "cosine") with its pseudo step."""
    return ddpm_snr(*ddpm_alpha_bar(name, steps, **options))


def gaussian_snr(name: str, steps: int, **options) -> np.ndarray:
    """SNR_t (t = 0..T) of any of the four Gaussian schedules, by registry name."""
    if name.startswith("ss-"):
        return star_shaped_snr(ddpm_schedule_snr(name[3:], steps, **options))
    return ddpm_schedule_snr(name, steps, **options)


def build_ddpm(name: str, steps: int, plus_one: bool = True) -> dict[str, np.ndarray]:
    options = {"plus_one": plus_one} if name == "cosine" else {}
    return from_alpha_bar(*ddpm_alpha_bar(name, steps, **options))


def build_star_shaped(name: str, steps: int, plus_one: bool = True) -> dict[str, np.ndarray]:
    options = {"plus_one": plus_one} if name == "cosine" else {}
    return from_snr(star_shaped_snr(ddpm_schedule_snr(name, steps, **options)))


def check_steps(steps: int) -> None:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"a schedule needs an integer number of steps T >= 1, got {steps!r}")
