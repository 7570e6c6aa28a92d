"""Anomaly detection with a trained model: the per-example bound as the anomaly score, and the
area under the precision–recall curve (average precision) of that score.

A model kind with its own score (``process.anomaly_scores``: the VAE baseline's negative ELBO,
:class:`~mstar_engine.kinds.vae.VAEKind`) is scored by it; every other by the bound below.

Score (MATH.md §1–2, "Bound"): the sum over steps of the per-step KL terms of the variational
bound, Σ_{t=1..T} E[ KL( k_t(· | x_t, x0) ‖ k_t(· | x_t, x̂0) ) ], with x_t, s_t from the forward
roll-out of x0 and x̂0 = D_θ(s_t, x_t, t). It is estimated by Monte Carlo over t: ``draws`` steps
per example, uniformly, scaled by T (an unbiased estimate of the sum). For independent coupling
the kernel KL is the star-shaped KL between marginals; otherwise :func:`kernel_kl`. A higher
score means the model explains the example worse: more anomalous.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mstar_engine.process.forward import rollout
from mstar_engine.process.kernel_kl import kernel_kl


@torch.no_grad()
def bound_scores(model, x0: Tensor, *, draws: int = 8, batch_size: int = 256, seed: int = 0) -> Tensor:
    """Per-example Monte Carlo estimate of the bound's KL terms (shape (N,), float64)."""
    family, rho = model.process.family, model.process.rho()
    T = family.steps
    device = next(model.denoiser.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    for start in range(0, x0.shape[0], batch_size):
        x = x0[start:start + batch_size].to(device=device, dtype=torch.float64)
        b = x.shape[0]
        keep = torch.randint(1, T + 1, (b, draws), generator=g, device=device)
        roll = rollout(family, x, keep, rho=rho, generator=g)
        t = keep.reshape(-1)
        x_t, s_t = roll.x.flatten(0, 1), roll.s.flatten(0, 1)
        x_rep = x.repeat_interleave(draws, 0)
        x0_hat = model.denoiser(s_t, x_t, t).to(torch.float64)
        r = rho.to(torch.float64)[t]
        if bool((r == 0).all()):
            kl = family.kl(x_rep, x0_hat, t - 1)
        else:
            kl = kernel_kl(family, x_t, x_rep, x0_hat, t, r, generator=g)
        out.append(T * kl.to(torch.float64).reshape(b, draws).mean(1).cpu())
    return torch.cat(out)


def anomaly_scores(model, x0: Tensor, *, batch_size: int = 256, seed: int = 0) -> Tensor:
    """Per-example anomaly scores of ``model`` (shape (N,), float64; higher = more anomalous): the
    kind's own score when it has one (the VAE's negative ELBO averaged over its ``score_draws``
    latent draws, from a generator seeded with ``seed`` on the network's device), else the bound's
    KL terms (:func:`bound_scores`, the exponential-family kinds)."""
    kind = model.process
    if hasattr(kind, "anomaly_scores"):
        device = next(model.denoiser.parameters()).device
        return kind.anomaly_scores(model.denoiser, x0, draws=kind.score_draws, batch_size=batch_size,
                                   generator=torch.Generator(device=device).manual_seed(seed))
    return bound_scores(model, x0, batch_size=batch_size, seed=seed)


def average_precision(scores, is_anomaly) -> float:
    """Area under the precision–recall curve of ``scores`` (higher = more anomalous) as average
    precision, Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds (ties count together),
    the step-wise estimator of scikit-learn's ``average_precision_score``."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(is_anomaly, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of one length, got {scores.shape} and {positive.shape}")
    n_pos = int(positive.sum())
    if n_pos == 0:
        raise ValueError("AUPRC needs at least one anomaly among the examples")
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    tp = np.cumsum(p)
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]   # the last index of each distinct score
    tp, seen = tp[last], last + 1
    precision, recall = tp / seen, tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
