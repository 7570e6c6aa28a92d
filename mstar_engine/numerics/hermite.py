"""Monotone cubic Hermite tables, evaluated and inverted exactly (the geodesic-angle CDFs of
:class:`~mstar_engine.numerics.geodesic.GeodesicAngleCDF`).

A table is a flat tensor of node values ``Y`` and one of node slopes ``M`` (d/du) on a grid of
``nodes`` points per row, uniform in u with spacing h; an element names its row by the flat index of
the row's first node (``base``). On the interval from node k, with τ ∈ [0, 1] and the slopes
scaled to the interval (m = M·h), the interpolant is written in Horner form,

    Y(τ) = y0 + τ (m0 + τ (c2 + τ c3)),   c2 = 3Δ − 2 m0 − m1,  c3 = m0 + m1 − 2Δ,  Δ = y1 − y0,

which is the usual Hermite basis rearranged (fewer operations, and Y(τ) − y is formed from the
difference y0 − y, not from two large values).

* :func:`monotone_slopes` — Fritsch–Carlson limited node slopes: the interpolant is monotone.
* :func:`value` — the interpolant at (node, τ).
* :func:`search` — the interval holding y, by binary search (one pass per bit of the node index).
* :func:`invert` — (node, τ) with Y = y: :func:`search` for the interval, then Newton on the cubic,
  bracketed (a step that leaves the bracket [τ_lo, τ_hi] of the signs seen, or meets a
  non-positive slope, is replaced by bisection). A Newton step of at most :data:`NEWTON_TOL` is
  accepted even when rounding puts it just outside the bracket: the root is then within rounding
  of it. On the CPU the loop stops once every element's last step was such a Newton step (one host
  sync per iteration); from the linear interpolant that takes two to three iterations.

Gathers go through :func:`take` (``index_select`` on the flat table, about twice as fast as
``torch.take`` on the CPU). Oracles: ``tests/families/test_fast_paths.py`` and the table tests of
``tests/numerics/test_bessel_geodesic.py``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

#: Newton steps below this (in units of the interval, τ) count as converged: the error left after
#: such a step is of order its square.
NEWTON_TOL = 1e-8


def monotone_slopes(Y: np.ndarray, M: np.ndarray, h: np.ndarray) -> np.ndarray:
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


def take(table: Tensor, index: Tensor) -> Tensor:
    """``torch.take`` by ``index_select`` on the flattened table (on the CPU about twice as fast)."""
    return torch.index_select(table.reshape(-1), 0, index.reshape(-1)).reshape(index.shape)


def _interval(Y: Tensor, M: Tensor, k: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(y0, m0, c2, c3, Δ) of the interval from flat node k (slopes scaled by h)."""
    y0, y1 = take(Y, k), take(Y, k + 1)
    m0, m1 = take(M, k) * h, take(M, k + 1) * h
    gap = y1 - y0
    return y0, m0, 3 * gap - 2 * m0 - m1, m0 + m1 - 2 * gap, gap


def value(Y: Tensor, M: Tensor, k: Tensor, tau: Tensor, h: Tensor) -> Tensor:
    """The interpolant on the interval from flat node k at τ ∈ [0, 1]."""
    y0, m0, c2, c3, _ = _interval(Y, M, k, h)
    return y0 + tau * (m0 + tau * (c2 + tau * c3))


def search(Y: Tensor, base: Tensor, nodes: int, y: Tensor) -> Tensor:
    """Flat index of the interval holding y: the last node ≤ y among the row's nodes 0..N − 2
    (node 0 when y lies below them all), by binary search, one bit of the index per pass
    (int32 when the table has fewer than 2³¹ entries)."""
    steps = int(math.ceil(math.log2(nodes - 1)))
    past = (1 << steps) > nodes  # the bits could reach beyond the row's last node N − 1
    # int32 indices where the table allows: on the CPU the passes take less than half the time
    base = base.to(torch.int32) if Y.numel() < 2 ** 31 else base
    lo = base
    for bit in (1 << k for k in reversed(range(steps))):
        cand = torch.minimum(lo + bit, base + (nodes - 1)) if past else lo + bit
        hit = take(Y, cand) <= y
        lo = torch.where(hit, cand, lo) if past else lo.add(hit, alpha=bit)
    return torch.minimum(lo, base + (nodes - 2))  # the last interval starts at node N − 2


def invert(Y: Tensor, M: Tensor, base: Tensor, nodes: int, h: Tensor, y: Tensor,
           newton_steps: int = 12) -> tuple[Tensor, Tensor]:
    """(j, τ): the interval j (0..nodes − 2, relative to ``base``) and τ ∈ [0, 1] on it where the
    interpolant equals y, for y between the row's end values (clamped to the end intervals beyond)."""
    lo_idx = search(Y, base, nodes, y)
    y0, m0, c2, c3, gap = _interval(Y, M, lo_idx, h)
    d = y0 - y  # Y(τ) − y = d + τ (m0 + τ (c2 + τ c3))
    tau = torch.where(gap > 0, -d / torch.where(gap > 0, gap, 1.0), 0.0).clamp(0.0, 1.0)
    c2x2, c3x3 = 2 * c2, 3 * c3
    t_lo, t_hi = torch.zeros_like(tau), torch.ones_like(tau)
    early_exit = tau.device.type == "cpu"
    for _ in range(newton_steps):
        f = d + tau * (m0 + tau * (c2 + tau * c3))
        above = f > 0
        t_hi = torch.where(above, tau, t_hi)
        t_lo = torch.where(above, t_lo, tau)
        df = m0 + tau * (c2x2 + tau * c3x3)
        delta = f / df.clamp(min=1e-300)  # a slope ≤ 0 is no Newton step (ok below is False)
        step = tau - delta
        small = delta.abs() <= NEWTON_TOL
        ok = (df > 0) & (small | ((step >= t_lo) & (step <= t_hi)))
        done = early_exit and bool((ok & small).all())
        tau = torch.where(ok, step, 0.5 * (t_lo + t_hi))
        if done:
            break
    return lo_idx - base, tau.clamp(0.0, 1.0)
