"""Fréchet distance between two Gaussians (the FID formula), without ``scipy.linalg.sqrtm``.

``d² = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}``.

pytorch-fid computes the last trace with ``scipy.linalg.sqrtm(Σ1 Σ2)``, whose call breaks with
scipy ≥ 1.18. Here the trace comes from the eigenvalues of the symmetric PSD matrix
``S = Σ1^{1/2} Σ2 Σ1^{1/2}`` (``numpy.linalg.eigh``): ``tr S^{1/2} = Σ sqrt(max(λ, 0))``. S is similar
to Σ1 Σ2, so this is the same quantity pytorch-fid computes, without complex parts or its
"singular product" retry. Everything is float64.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["activation_statistics", "frechet_distance", "psd_sqrt"]


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def psd_sqrt(sigma) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via ``eigh`` (negative eigenvalues clipped to 0)."""
    s = _as_float64(sigma)
    s = 0.5 * (s + s.T)
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def activation_statistics(acts) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and covariance ``(d, d)`` (unbiased, divisor n − 1) of ``(n, ...)`` activations.

    Matches pytorch-fid's ``np.mean(act, axis=0)``, ``np.cov(act, rowvar=False)``; float64.
    """
    a = _as_float64(acts)
    a = a.reshape(a.shape[0], -1)
    if a.shape[0] < 2:
        raise ValueError("need at least 2 activations for a covariance")
    mu = a.mean(axis=0)
    centred = a - mu
    sigma = centred.T @ centred / (a.shape[0] - 1)
    return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(μ1, Σ1) and N(μ2, Σ2) — the FID value.

    Computed as ``‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 Σ_i sqrt(max(λ_i, 0))`` with λ the eigenvalues of
    ``Σ1^{1/2} Σ2 Σ1^{1/2}`` (``numpy.linalg.eigh``); no ``scipy.linalg.sqrtm``. Inputs may be numpy
    arrays or tensors; covariances are symmetrised first. Tiny negative results from rounding are
    returned as they are (not clipped), like pytorch-fid.
    """
    mu1, mu2 = np.atleast_1d(_as_float64(mu1)), np.atleast_1d(_as_float64(mu2))
    s1, s2 = np.atleast_2d(_as_float64(sigma1)), np.atleast_2d(_as_float64(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    s1 = 0.5 * (s1 + s1.T)
    s2 = 0.5 * (s2 + s2.T)
    r1 = psd_sqrt(s1)
    m = r1 @ s2 @ r1
    lam = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_covmean = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
