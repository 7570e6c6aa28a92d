"""Deterministic quadrature over reference data distributions: expectations for the families'
KL-SNR measures (:mod:`mstar_engine.schedules.kl_snr`), converged to ~1e-12."""
from __future__ import annotations

import numpy as np


def logit_nodes(a: float, b: float, h: float = 0.2, half: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid nodes of x ~ Beta(a, b) on a uniform grid in v = logit x (density ∝ x^a (1 − x)^b
    in v); the integrands are smooth in v, so the rule converges geometrically (h = 0.2 is
    exact to ~1e-12 relative for ν up to 1e8)."""
    v = np.arange(-half, half + h / 2, h)
    lx, l1x = -np.logaddexp(0.0, -v), -np.logaddexp(0.0, v)
    w = np.exp(a * lx + b * l1x - np.max(a * lx + b * l1x))
    return np.exp(lx), w / w.sum()


def log_nodes(shape: float, rate: float, h: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Trapezoid nodes of x ~ Gamma(shape, rate) on a uniform grid in u = log x."""
    u = np.arange(-25.0, 5.0 + h / 2, h)
    x = np.exp(u)
    logw = shape * u - rate * x
    w = np.exp(logw - logw.max())
    return x, w / w.sum()


def cov(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weighted covariance over the last axis (x: nodes; y: (..., nodes))."""
    xm = x - np.sum(w * x)
    return np.sum(w * xm * y, axis=-1)


def column(a) -> np.ndarray:
    """``a`` as float64 with a trailing axis of length 1 (to broadcast against the nodes)."""
    return np.asarray(a, dtype=np.float64)[..., None]
