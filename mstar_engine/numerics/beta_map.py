"""The Beta noise map u = logit F⁻¹_{a,b}(Φ(ξ)) and its inverse (MATH.md §2, §4): public functions,
autograd, and the choice of implementation by device.

On accelerators (and on the CPU with :data:`CPU_BACKEND` = "torch") the map runs on the torch
numerics of :mod:`.incomplete_beta`. On the CPU it runs by default on scipy.special (Boost's
incomplete beta and its inverses): a small batch there pays torch's per-op overhead hundreds of
times over (one op per term of the continued fraction, per Halley step), ~11 ms for 256
elements where the compiled loops take ~0.8 ms. Large batches are split across
``torch.get_num_threads()`` threads (the ufuncs release the GIL). The two agree to ~1e-13
(``tests/numerics/test_incomplete_beta.py`` runs its oracle tests on both).

scipy works in logit space too: x and 1 − x are each computed by their own inverse (x = I⁻¹_p(a, b),
1 − x as the upper quantile of Beta(b, a)), so u = log x − log(1 − x) keeps full precision at
both ends. Elements in the far tails (|ξ| > :data:`DEEP_Z`, or a CDF tail below :data:`DEEP_P`,
near double precision's underflow) are computed in log space by the torch numerics.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import special
from torch import Tensor

from mstar_engine.numerics.incomplete_beta import _log_tails, _lower_logit_icdf, _shape, beta_logit_log_density
from mstar_engine.numerics.special import Z_MAX, log_ndtr, log_normal_pdf, ndtri_log

#: The two noise maps on CPU tensors: "scipy" (compiled loops) or "torch" (as on accelerators).
CPU_BACKEND = "scipy"
#: |ξ| beyond which Φ(−|ξ|) < 1e-290 would come close to underflow: left to the log-space torch path.
DEEP_Z = 36.0
#: The smaller CDF tail below which the torch path takes over.
DEEP_P = 1e-290
#: 1 − x below which it is computed by its own inverse rather than by subtraction.
NEAR_ONE = 1e-4
#: Elements per thread before a call is split across threads.
CHUNK = 16384


def _threaded(fn, *arrays: np.ndarray) -> np.ndarray:
    """fn(*arrays) elementwise, split across torch's thread count for large inputs."""
    n = arrays[0].size
    workers = min(torch.get_num_threads(), n // CHUNK)
    if workers <= 1:
        return fn(*arrays)
    bounds = np.linspace(0, n, workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda i: fn(*(v[bounds[i]:bounds[i + 1]] for v in arrays)), range(workers))
        return np.concatenate(list(parts))


def _np_icdf(xi: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    flip = xi > 0   # the upper tail of Beta(a, b) at u is the lower tail of Beta(b, a) at −u
    aa, bb = np.where(flip, b, a), np.where(flip, a, b)
    log_p = special.log_ndtr(-np.abs(xi))
    p = np.exp(log_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = special.betaincinv(aa, bb, p)
        y = 1.0 - x
        # 1 − x by its own inverse only where the subtraction loses more than the Newton step below
        # recovers (it squares a relative error of at most 1e-16 / NEAR_ONE)
        near_one = np.flatnonzero(x > 1.0 - NEAR_ONE)
        y[near_one] = special.betainccinv(bb[near_one], aa[near_one], p[near_one])
        v = np.log(x) - np.log(y)
        # one Newton step on log F(v) = log p polishes Boost's inverse (~1e-9 relative at a = 1e5,
        # b = 1e3) to the accuracy of its CDF; F from the side where x or 1 − x is accurate
        x, y = special.expit(v), special.expit(-v)
        f = special.betainc(aa, bb, x)
        tiny_y = np.flatnonzero(y < 1e-3)
        f[tiny_y] = special.betaincc(bb[tiny_y], aa[tiny_y], y[tiny_y])
        log_pu = -aa * np.logaddexp(0.0, -v) - bb * np.logaddexp(0.0, v) - special.betaln(aa, bb)
        v = v - (np.log(f) - log_p) * np.exp(np.log(f) - log_pu)
    v = np.where((np.abs(xi) > DEEP_Z) | ~np.isfinite(v), np.nan, v)  # x or 1 − x underflowed
    return np.where(flip, -v, v)


def _np_normal(u: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lower = special.betainc(a, b, special.expit(u))
    upper = special.betainc(b, a, special.expit(-u))
    z = np.where(lower <= upper, special.ndtri(lower), -special.ndtri(upper))
    return np.where(np.minimum(lower, upper) < DEEP_P, np.nan, z)


def _run(fn, t: Tensor, a: Tensor, b: Tensor) -> Tensor:
    arrays = [v.detach().to(torch.float64).reshape(-1).numpy() for v in (t, a, b)]
    return torch.from_numpy(_threaded(fn, *arrays)).reshape(t.shape).to(t.dtype)


def _cpu_icdf(xi: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """u = logit F⁻¹_{a,b}(Φ(ξ)) for CPU tensors of one shape; NaN where |ξ| > :data:`DEEP_Z` or x
    or 1 − x underflows."""
    return _run(_np_icdf, xi, a, b)


def _cpu_normal(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """ξ = Φ⁻¹(F_{a,b}(sigmoid(u))) for CPU tensors of one shape; NaN where the smaller tail is
    below :data:`DEEP_P`."""
    return _run(_np_normal, u, a, b)


# ---------------------------------------------------------------------------------------- torch numerics, dispatch, autograd
def _torch_icdf(xi: Tensor, a: Tensor, b: Tensor) -> Tensor:
    flip = xi > 0  # the upper tail of Beta(a, b) at u is the lower tail of Beta(b, a) at −u
    aa, bb = torch.where(flip, b, a).reshape(-1), torch.where(flip, a, b).reshape(-1)
    z = -xi.abs().reshape(-1)
    v = _lower_logit_icdf(log_ndtr(z), z.clamp(min=-Z_MAX), _shape(aa, bb), xi.device.type == "cpu").reshape(xi.shape)
    return torch.where(flip, -v, v)


def _torch_normal(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    log_lower, log_upper, _ = _log_tails(u, _shape(a, b), u.device.type == "cpu")
    z = ndtri_log(torch.minimum(log_lower, log_upper))  # from the smaller tail
    return torch.where(log_lower <= log_upper, z, -z).clamp(-Z_MAX, Z_MAX)


def _dispatch(torch_fn, cpu_fn, v: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """torch_fn(v, a, b), or on the CPU (:data:`CPU_BACKEND` "scipy") cpu_fn, whose NaNs (the far
    tails) torch_fn fills in where the inputs are not NaN."""
    if v.device.type != "cpu" or CPU_BACKEND != "scipy":
        return torch_fn(v, a, b)
    out = cpu_fn(v, a, b)
    deep = torch.isnan(out) & ~(torch.isnan(v) | torch.isnan(a) | torch.isnan(b))  # NaN in, NaN out
    if bool(deep.any()):
        out[deep] = torch_fn(v[deep], a[deep], b[deep])
    return out


class _BetaLogitIcdfNormal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xi: Tensor, a: Tensor, b: Tensor) -> Tensor:
        u = _dispatch(_torch_icdf, _cpu_icdf, xi, a, b)
        ctx.save_for_backward(xi, a, b, u)
        return u

    @staticmethod
    def backward(ctx, grad: Tensor):
        xi, a, b, u = ctx.saved_tensors
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise NotImplementedError("the Beta inverse CDF is not differentiable in a, b")
        return grad * torch.exp(log_normal_pdf(xi) - beta_logit_log_density(u, a, b)), None, None


class _NormalFromBetaLogit(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, a: Tensor, b: Tensor) -> Tensor:
        z = _dispatch(_torch_normal, _cpu_normal, u, a, b)
        ctx.save_for_backward(z, u, a, b)
        return z

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, u, a, b = ctx.saved_tensors
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise NotImplementedError("the Beta CDF map is not differentiable in a, b")
        dz = torch.exp(beta_logit_log_density(u, a, b) - log_normal_pdf(z))
        return grad * torch.where(z.abs() >= Z_MAX, torch.zeros_like(dz), dz), None, None


def beta_logit_icdf_normal(xi: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """u = logit F⁻¹_{a,b}(Φ(ξ)): standard normal noise to the logit of a Beta(a, b) variate.

    ξ ≤ 0 solves the lower tail with log Φ(ξ), ξ > 0 the lower tail of Beta(b, a) with log Φ(−ξ)
    (and negates), so both ends keep full relative precision in x and in 1 − x.
    Differentiable in ξ: du/dξ = φ(ξ)/p_U(u)."""
    xi, a, b = torch.broadcast_tensors(xi, a, b)
    return _BetaLogitIcdfNormal.apply(xi, a, b)


def normal_from_beta_logit(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """ξ = Φ⁻¹(F_{a,b}(sigmoid(u))): the inverse of :func:`beta_logit_icdf_normal`.

    Uses the smaller tail; clamped to ±:data:`~.special.Z_MAX` where the CDF underflows (a state
    far in the tail of q_t(· | x̂0) in a reverse step). Differentiable in u (zero where clamped)."""
    u, a, b = torch.broadcast_tensors(u, a, b)
    return _NormalFromBetaLogit.apply(u, a, b)
