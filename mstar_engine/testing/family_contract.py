"""The family contract (MATH.md §1, §2, §4): checks every family passes, importable so that a
plug-in's own tests run them unchanged::

    from mstar_engine.testing import family_contract

    def test_my_family_contract():   # or parametrise over family_contract.CHECKS, one test each
        family_contract.check_all(MyFamily((3,), **schedule), data=my_x0, bad=my_out_of_domain_batch)

A :class:`Subject` is a small float64 instance (≥ 2 steps), ``data(n, generator)`` giving n
in-domain x0 spread over the domain, and a batch ``bad`` that ``check_domain`` must reject. Each
check raises AssertionError with what went wrong. Tolerances and statistics (fixed seeds):

* round trip from_noise(to_noise(x)) = x: |Δ| ≤ 1e-9 (1 + |x|) elementwise;
* normality of to_noise on exact samples: one-sample KS against N(0, 1) of the flattened noise,
  n = 4000 examples, p > 1e-3, at steps 0, T//2, T;
* marginal preservation of the coupled kernel: two-sample KS of x_{t-1} (kernel) against an
  independent direct sample of q_{t-1}, n = 4000 each, p > 1e-3, on two scalar projections (first
  coordinate and a fixed random linear combination), plus first and second moments within 5
  standard errors of the difference, for ρ ∈ {0, 0.5, 0.99, 1} and t ∈ {1, T};
* KL against its Monte Carlo estimate E_x[log q(x|x0) − log q(x|x̂0)] over 4000 (x0, x̂0, x)
  triples, one draw x per pair: the mean of log-ratio − KL is within 3 standard errors of 0;
* exponential-family identity and sufficiency: 1e-9 relative and 1e-6 absolute (posterior probabilities).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from mstar_engine.families.base import DomainError, Family
from mstar_engine.process.kernel import coupled_step

F64 = torch.float64
N_STAT = 4000
P_MIN = 1e-3


@dataclass(frozen=True)
class Subject:
    family: Family
    data: Callable[[int, torch.Generator], Tensor]
    bad: Tensor


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def inner(a: Tensor, b: Tensor) -> Tensor:
    return (flat(a) * flat(b)).sum(1)


def some_steps(fam: Family) -> list[int]:
    return sorted({0, fam.steps // 2, fam.steps})


# ------------------------------------------------------------------------------------ (1) shapes, domain
def check_instance(s: Subject) -> None:
    fam = s.family
    assert fam.steps >= 2
    for key in fam.schedule_params:
        assert getattr(fam, key).shape[0] == fam.steps + 1
    x0 = s.data(32, gen(0))
    assert x0.shape == (32, *fam.event_shape) and x0.dtype == F64
    fam.check_domain(x0, "toy data")


def check_samples_in_domain_every_step(s: Subject) -> None:
    fam, x0 = s.family, s.data(256, gen(1))
    for t in range(fam.steps + 1):
        x = fam.sample(x0, t, gen(100 + t))
        assert x.shape == (256, *fam.event_shape) and x.dtype == F64, t
        fam.check_domain(x, f"sample at step {t}")
        assert torch.equal(x, fam.sample(x0, t, gen(100 + t))), "same seed, different draw"
        st = fam.stat(x, t)
        assert st.shape == (256, *fam.stat_shape) and torch.isfinite(st).all(), t
    assert fam.features(x0).shape == (256, *fam.stat_shape)


def check_float32_samples_and_prior(s: Subject) -> None:
    fam, x0 = s.family, s.data(256, gen(2)).float()
    for t in range(fam.steps + 1):
        x = fam.sample(x0, t, gen(200 + t))
        assert x.dtype == torch.float32
        fam.check_domain(x, f"float32 sample at step {t}")
        assert torch.isfinite(fam.stat(x, t)).all()
    for dtype in (F64, torch.float32):
        p = fam.prior_sample(512, gen(3), dtype=dtype)
        assert p.shape == (512, *fam.event_shape) and p.dtype == dtype
        fam.check_domain(p, "prior sample")


def check_per_example_steps(s: Subject) -> None:
    """Every method takes a vector of steps, one per example, as well as a scalar step."""
    fam = s.family
    T = fam.steps
    x0, t_vec = s.data(T + 1, gen(4)), torch.arange(T + 1)
    xi = torch.randn((T + 1, *fam.noise_shape), generator=gen(5), dtype=F64)
    x = fam.from_noise(xi, x0, t_vec)
    x0_hat = s.data(T + 1, gen(6))
    for i in range(T + 1):
        assert torch.allclose(x[i:i + 1], fam.from_noise(xi[i:i + 1], x0[i:i + 1], i), rtol=1e-12, atol=1e-12)
    for method, args in ((fam.log_prob, (x, x0)), (fam.kl, (x0, x0_hat)), (fam.log_normalizer, (x0,))):
        row = torch.stack([method(*(a[i:i + 1] for a in args), i)[0] for i in range(T + 1)])
        assert torch.allclose(method(*args, t_vec), row, rtol=1e-12, atol=1e-12), method.__name__
    row = torch.cat([fam.stat(x[i:i + 1], i) for i in range(T + 1)])
    assert torch.allclose(fam.stat(x, t_vec), row, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------ (2) round trip
def check_round_trip(s: Subject) -> None:
    fam, x0 = s.family, s.data(512, gen(7))
    for t in range(fam.steps + 1):
        x = fam.sample(x0, t, gen(300 + t))
        xi = fam.to_noise(x, x0, t, gen(400 + t))
        assert xi.shape == (512, *fam.noise_shape) and torch.isfinite(xi).all(), t
        err = ((fam.from_noise(xi, x0, t) - x).abs() / (1 + x.abs())).max().item()
        assert err <= 1e-9, f"step {t}: round-trip error {err:.3g}"


# ------------------------------------------------------------------------------------ (3) normality
def check_to_noise_is_standard_normal(s: Subject) -> None:
    fam, x0 = s.family, s.data(N_STAT, gen(8))
    for t in some_steps(fam):
        x = fam.sample(x0, t, gen(5000 + t))
        xi = fam.to_noise(x, x0, t, gen(600 + t)).reshape(-1).numpy()
        p = stats.kstest(xi, "norm").pvalue
        assert p > P_MIN, f"step {t}: KS p = {p:.2g} (mean {xi.mean():.3f}, std {xi.std():.3f})"


# ------------------------------------------------------------------------------------ (4) coupled kernel
def _compare_samples(a: Tensor, b: Tensor, label: str) -> None:
    a, b = a.numpy(), b.numpy()
    p = stats.ks_2samp(a, b, method="asymp").pvalue
    assert p > P_MIN, f"{label}: two-sample KS p = {p:.2g}"
    for k in (1, 2):
        ma, mb = a ** k, b ** k
        se = math.sqrt(ma.var() / ma.size + mb.var() / mb.size) + 1e-300
        z = abs(ma.mean() - mb.mean()) / se
        assert z < 5, f"{label}: moment {k} differs by {z:.1f} standard errors"


def check_coupled_kernel_preserves_marginal(s: Subject, rho: float) -> None:
    fam = s.family
    weights = torch.randn(int(np.prod(fam.event_shape)), generator=gen(9), dtype=F64)
    for t in sorted({1, fam.steps}):
        x0_a = s.data(N_STAT, gen(700 + t))
        x_t = fam.sample(x0_a, t, gen(710 + t))
        x_prev = coupled_step(fam, x_t, x0_a, t, rho, gen(720 + t))
        fam.check_domain(x_prev, f"kernel output at step {t - 1}")
        direct = fam.sample(s.data(N_STAT, gen(730 + t)), t - 1, gen(740 + t))
        for proj, f in (("first coordinate", lambda x: flat(x)[:, 0]), ("projection", lambda x: flat(x) @ weights)):
            _compare_samples(f(x_prev), f(direct), f"rho={rho}, t={t}, {proj}")


# ------------------------------------------------------------------------------------ (5) KL
def check_kl_nonnegative_and_zero_at_equality(s: Subject) -> None:
    fam, x0, x0_hat = s.family, s.data(512, gen(10)), s.data(512, gen(11))
    for t in range(fam.steps + 1):
        kl = fam.kl(x0, x0_hat, t)
        assert kl.shape == (512,) and torch.isfinite(kl).all() and (kl >= 0).all(), t
        same = fam.kl(x0, x0, t)
        assert same.abs().max() <= 1e-8 * (1 + kl.abs().mean()), f"step {t}: KL(x0, x0) = {same.abs().max():.3g}"
        rescaled = fam.kl_rescaled(x0, x0_hat, t)
        assert rescaled.shape == (512,) and (rescaled >= 0).all() and torch.isfinite(rescaled).all()
        assert fam.kl_rescaled(x0, x0, t).abs().max() <= 1e-8 * (1 + rescaled.abs().mean())


def check_kl_matches_monte_carlo(s: Subject) -> None:
    fam, x0, x0_hat = s.family, s.data(N_STAT, gen(12)), s.data(N_STAT, gen(13))
    for t in some_steps(fam):
        x = fam.sample(x0, t, gen(800 + t))
        d = fam.log_prob(x, x0, t) - fam.log_prob(x, x0_hat, t)
        kl = fam.kl(x0, x0_hat, t)
        assert torch.isfinite(d).all(), t
        # d_i − KL_i has mean 0 given each pair; its spread is the Monte Carlo noise alone
        resid = d - kl
        mc, se = resid.mean().item(), resid.std().item() / math.sqrt(N_STAT)
        assert abs(mc) <= 3 * se + 1e-12 * kl.abs().mean().item(), \
            f"step {t}: mean KL {kl.mean():.6g} vs Monte Carlo {d.mean():.6g} (gap {mc:.3g} ± {se:.2g})"


# ------------------------------------------------------------------------------------ (6), (7) head, domain
def check_head_outputs_in_domain(s: Subject, dtype: torch.dtype) -> None:
    fam, g = s.family, gen(14)
    raws = [torch.randn((256, *fam.raw_shape), generator=g, dtype=dtype) * scale for scale in (1.0, 10.0, 50.0)]
    raws += [torch.full((4, *fam.raw_shape), v, dtype=dtype) for v in (-50.0, 0.0, 50.0)]
    for raw in raws:
        out = fam.head(raw)
        assert out.shape == (raw.shape[0], *fam.event_shape)
        fam.check_domain(out, "head output")


def check_out_of_domain_is_rejected(s: Subject) -> None:
    assert s.bad.ndim >= 1 and s.bad.shape[0] >= 1
    try:
        s.family.check_domain(s.bad, "the example")
    except DomainError as exc:
        assert s.family.name in str(exc) and "the example" in str(exc), str(exc)
    else:
        raise AssertionError("check_domain accepted the out-of-domain example")


# ------------------------------------------------------------------------------------ (8) EF identity
def check_exponential_family_identity(s: Subject) -> None:
    """log q_t(x|x0) − [<f(x0), stat(x, t)> − Ω_t(x0)] = c_t(x) does not depend on x0."""
    fam, x0_a, x0_b = s.family, s.data(256, gen(15)), s.data(256, gen(16))
    for t in range(fam.steps + 1):
        x = fam.sample(x0_a, t, gen(900 + t))
        st = fam.stat(x, t)
        parts = []
        for x0 in (x0_a, x0_b):
            lp, dot, omega = fam.log_prob(x, x0, t), inner(fam.features(x0), st), fam.log_normalizer(x0, t)
            assert lp.shape == omega.shape == (256,)
            parts.append((lp - (dot - omega), lp.abs() + dot.abs() + omega.abs()))
        (c_a, scale_a), (c_b, scale_b) = parts
        tol = 1e-9 * (1 + torch.maximum(scale_a, scale_b))
        assert ((c_a - c_b).abs() <= tol).all(), f"step {t}: max gap {(c_a - c_b).abs().max():.3g}"


# ------------------------------------------------------------------------------------ (9) sufficiency
def _distinct(s: Subject, k: int) -> Tensor:
    rows: list[Tensor] = []
    for row in s.data(64, gen(17)):
        if all(not torch.allclose(row, r) for r in rows):
            rows.append(row)
        if len(rows) == k:
            return torch.stack(rows)
    raise AssertionError(f"the data gave fewer than {k} distinct values in 64 draws")


def check_tail_statistic_is_sufficient(s: Subject) -> None:
    """Posterior over a discrete prior from all x_{t:T} equals the one from s_t alone (Theorem 1)."""
    fam, n = s.family, 200
    T, cands = fam.steps, _distinct(s, 4)
    log_prior = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64))
    g = gen(18)
    x0 = cands[torch.multinomial(log_prior.exp(), n, replacement=True, generator=g)]
    for t in sorted({1, T // 2, T}):
        brute, suff = log_prior.expand(n, 4).clone(), log_prior.expand(n, 4).clone()
        s_t = 0
        for step in range(t, T + 1):
            x_s = fam.sample(x0, step, g)
            s_t = s_t + fam.stat(x_s, step)
            for k in range(4):
                ck = cands[k].expand_as(x0)
                brute[:, k] += fam.log_prob(x_s, ck, step)
                suff[:, k] -= fam.log_normalizer(ck, step)
        for k in range(4):
            suff[:, k] += inner(fam.features(cands[k].expand_as(x0)), s_t)
        diff = (torch.softmax(brute, 1) - torch.softmax(suff, 1)).abs().max().item()
        assert diff <= 1e-6, f"t = {t}: posteriors differ by {diff:.3g}"


#: Every check by name (parametrise a test over it to see each result on its own).
CHECKS: dict[str, Callable[[Subject], None]] = {
    "instance": check_instance,
    "samples_in_domain_every_step": check_samples_in_domain_every_step,
    "float32_samples_and_prior": check_float32_samples_and_prior,
    "per_example_steps": check_per_example_steps,
    "round_trip": check_round_trip,
    "to_noise_is_standard_normal": check_to_noise_is_standard_normal,
    **{f"coupled_kernel_preserves_marginal[rho={rho}]": partial(check_coupled_kernel_preserves_marginal, rho=rho)
       for rho in (0.0, 0.5, 0.99, 1.0)},
    "kl_nonnegative_and_zero_at_equality": check_kl_nonnegative_and_zero_at_equality,
    "kl_matches_monte_carlo": check_kl_matches_monte_carlo,
    **{f"head_outputs_in_domain[{d}]": partial(check_head_outputs_in_domain, dtype=d) for d in (F64, torch.float32)},
    "out_of_domain_is_rejected": check_out_of_domain_is_rejected,
    "exponential_family_identity": check_exponential_family_identity,
    "tail_statistic_is_sufficient": check_tail_statistic_is_sufficient,
}


def check_all(family: Family, data: Callable[[int, torch.Generator], Tensor], bad: Tensor) -> None:
    """Run every check on ``family``; the first failure raises AssertionError naming the check."""
    subject = Subject(family, data, bad)
    for name, check in CHECKS.items():
        try:
            check(subject)
        except AssertionError as exc:
            raise AssertionError(f"family contract, {name}: {exc}") from exc
