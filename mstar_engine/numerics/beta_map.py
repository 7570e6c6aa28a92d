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

Float32 precision (``single``; :func:`beta_logit_icdf_normal_single`, the CPU path for float32
outputs): from a start (Boost's float32 inverse, or one carried along a chain by :func:`chain_start`) each
element takes a step of the inverse series of log F per evaluation of scipy's ``betainc``, as many
terms as its own error estimate asks for, until the logit is within :data:`SINGLE_TOL` (1e-8, a
sixth of a float32 ulp in x and 1 − x); mid-chain that is one evaluation. Where an element does not
settle within :data:`SINGLE_ITERS` steps, or lies beyond DEEP_Z, the float64 path computes it.
"""
from __future__ import annotations

import math
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
#: The float32-precision CPU path (``single=True``) stops an element once the predicted error of
#: its logit is below SINGLE_TOL (absolute; x and 1 − x then move by at most that relative, a
#: sixth of a float32 ulp), after at most SINGLE_ITERS evaluations of the CDF; elements left over
#: go to the float64 path.
SINGLE_TOL = 1e-8
SINGLE_ITERS = 5
#: Below this many elements (and without a guess) the float64 path is the faster one.
SINGLE_MIN = 1024
#: Elements that path works on at a time: its ~100 elementwise ops on whole CIFAR batches would
#: each fault in fresh pages for their results, which costs more than the arithmetic.
SINGLE_BLOCK = 65536
_SQRT_HALF, _LOG_2 = math.sqrt(0.5), math.log(2.0)
#: 1 − x below which that path evaluates F as 1 − I_{1−x}(b, a) (x rounded to double would move
#: the logit by 1e-16/(1 − x)).
SINGLE_NEAR_ONE = 1e-6


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


# ---------------------------------------------------------------------------------------- float32 precision (CPU)
def _log_beta(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor | float]:
    """(ln B(a, b), a bound on its error) for 1-D float64 tensors: lnΓ(a) + lnΓ(b) − lnΓ(a + b), the
    last once where a + b is the same for all (the Beta family: 2 + ν_t; else scipy's betaln), the
    first two in float32 where a, b ∈ [1, 2.5] (error ≤ 3e-7, mostly from rounding a and b; it
    scales the next step by at most that, which :func:`_series_step` counts)."""
    c = a + b
    lo, hi = float(c.min()), float(c.max())
    if not hi - lo <= 1e-13 * hi:
        return torch.from_numpy(special.betaln(a.numpy(), b.numpy())), 0.0
    lgc = float(special.gammaln(hi))
    lo = float(torch.minimum(a, b).min())
    if hi <= 3.5 and lo >= 1.0:  # then a, b ≤ 2.5
        return (torch.lgamma(a.float()) + torch.lgamma(b.float())).double() - lgc, 3e-7
    exact = torch.from_numpy(special.gammaln(a.numpy()) + special.gammaln(b.numpy())) - lgc
    small = (torch.minimum(a, b) >= 1.0) & (torch.maximum(a, b) <= 2.5)
    if lo > 2.5 or not bool(small.any()):
        return exact, 0.0
    fast = (torch.lgamma(a.float()) + torch.lgamma(b.float())).double() - lgc
    return torch.where(small, fast, exact), small.float() * 3e-7


def _lower_cdf(aa: Tensor, bb: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """I_x(aa, bb) for 1-D float64 CPU tensors, y = 1 − x; from y where 1 − x is tiny."""
    f = torch.from_numpy(_threaded(special.betainc, aa.numpy(), bb.numpy(), x.numpy()))
    near = torch.nonzero(y < SINGLE_NEAR_ONE).squeeze(1)
    if near.numel():
        f[near] = torch.from_numpy(special.betaincc(bb[near].numpy(), aa[near].numpy(), y[near].numpy()))
    return f


def _series_step(e: Tensor, k: Tensor, r: Tensor, l1: Tensor, l2: Tensor, d: Tensor, xy: Tensor,
                 r_err: Tensor | float) -> tuple[Tensor, Tensor]:
    """(step, done) of :func:`_polish` from Newton's step e (float64) and float32 k, r, l₁, l₂,
    d = 1 − 2x, xy = x(1 − x) (k = l − r formed in float64), r_err a bound on the relative error
    of r. Each element takes the fewest terms e + c₂e² + … whose estimated error (the next term,
    plus the last one times ρ = |e|(|k| + r) in case that vanishes by chance, plus r_err·|e|) is
    within SINGLE_TOL/4; the higher coefficients only where some element needs them."""
    ef = e.float()
    ea = ef.abs()
    rho = ea * (k.abs() + r)
    e2 = ef * ef
    k2, kr = k * k, k * r
    t2 = -0.5 * k * e2
    t3 = (2 * k2 + kr - l1) * (e2 * ef) / 6
    # float32 rounds the terms by ~1e-7 of their parts: negligible once |e| ≤ 0.05
    tol = SINGLE_TOL / 4 - r_err * ea - (ea > 0.05).float()
    done = t3.abs() + t2.abs() * rho <= tol
    step = e + t2
    if bool(done.all()):
        return step, done
    r2 = r * r
    t4 = (-6 * k2 * (k + r) + k * (7 * l1 - r2) + l1 * r - l2) * (e2 * e2) / 24
    step = step + t3 * ~done
    more = ~done
    done = done | (t4.abs() + t3.abs() * rho <= tol)
    if bool(done.all()):
        return step, done
    t5 = (24 * k2 * k2 + 36 * k2 * kr + 2 * k2 * (7 * r2 - 23 * l1) + kr * (r2 - 22 * l1) + 11 * k * l2
          + 7 * l1 * l1 - l1 * r2 + l2 * r - l1 * (d * d - 2 * xy)) * (e2 * e2 * ef) / 120
    more = more & ~done
    step = step + t4 * more
    done = done | (t5.abs() + t4.abs() * rho <= tol)
    # not yet convergent (|c₂e + c₃e² + c₄e³| > ½): Newton's step, which stays at or below the root
    wild = ~done & ((t2 + t3 + t4).abs() > 0.5 * ea)
    return torch.where(wild, e, step), done


def _polish(logp: Tensor, aa: Tensor, bb: Tensor, lnb: Tensor, lnb_err: Tensor | float,
            u: Tensor) -> tuple[Tensor, Tensor]:
    """Solve h(u) = log F_{aa,bb}(u) = logp (1-D float64, logp ≤ log ½) from the start u to
    |Δu| ≲ :data:`SINGLE_TOL`; returns (u, log p_U(u)), NaN where that took over SINGLE_ITERS steps.

    One evaluation of F per step: with e = (logp − h)/h' (Newton's step), the inverse series
    u + e(1 + c₂e + c₃e² + c₄e³) of h, as far as needed (:func:`_series_step`); the next term is the
    error estimate (the error to within a few per cent near the root). h' = r = p_U/F, and the c_k
    are polynomials in r, k = l − r and the derivatives l, l₁, l₂, l₃ of log p_U (closed-form in x;
    float32 is plenty for them). Where the series has not yet converged the step is Newton's, which
    lands at or below the root (h is concave: p_U is log-concave), so the iteration cannot run away."""
    out, out_lpu = torch.full_like(u, math.nan), torch.full_like(u, math.nan)
    idx = None
    neg_c = -(aa + bb).float()
    for _ in range(SINGLE_ITERS):
        x = torch.sigmoid(u)
        y = 1 - x  # to 1e-16/(1 − x) relative; where that is poor, from u
        near = torch.nonzero(y < 1e-3).squeeze(1)
        if near.numel():
            y[near] = torch.sigmoid(-u[near])
        h = torch.log(_lower_cdf(aa, bb, x, y))
        lpu = aa * torch.log(x) + bb * torch.log(y) - lnb
        r = torch.exp(lpu - h)
        e = (logp - h) / r
        l = aa * y - bb * x
        xf, yf = x.float(), y.float()
        xy, d = xf * yf, yf - xf
        l1 = neg_c * xy
        step, done = _series_step(e, (l - r).float(), r.float(), l1, l1 * d, d, xy, 2 * lnb_err)
        u = u + step
        sf = step.float()
        lpu = lpu + sf * (l.float() + 0.5 * sf * l1)  # at the new u, to ~l₂·step³/6 (a chain's next start)
        if bool(done.all()):
            if idx is None:
                return u, lpu
            out[idx], out_lpu[idx] = u, lpu
            break
        if idx is None:
            idx = torch.arange(u.numel())
        out[idx[done]], out_lpu[idx[done]] = u[done], lpu[done]
        keep = ~done & torch.isfinite(u)
        idx, u, logp, aa, bb, lnb, neg_c = (v[keep] for v in (idx, u, logp, aa, bb, lnb, neg_c))
        lnb_err = lnb_err[keep] if torch.is_tensor(lnb_err) else lnb_err
        if idx.numel() == 0:
            break
    return out, out_lpu


def chain_start(u: Tensor, log_pu: Tensor, xi: Tensor, xi_new: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """A guess of the map at ξ' = ``xi_new`` from its value u = logit F⁻¹_{a,b}(Φ(ξ)) at ξ (with
    log p_U(u), same a, b): the Taylor series of u(ξ) to third order in ξ' − ξ, with
    u′ = φ(ξ)/p_U(u), u″ = u′(−ξ − l u′), u‴ = u″(−ξ − l u′) − u′(1 + l₁u′² + l u″) (l, l₁ the
    first two derivatives of log p_U, closed-form). The increment in float32, added to u."""
    dx = (xi_new - xi).float()
    uf, xi, a, b = u.float(), xi.float(), a.float(), b.float()
    x, y = torch.sigmoid(uf), torch.sigmoid(-uf)
    l, l1 = a * y - b * x, -(a + b) * x * y
    d1 = torch.exp(log_normal_pdf(xi) - log_pu.float())
    w = -xi - l * d1
    d2 = d1 * w
    d3 = d2 * w - d1 * (1 + l1 * d1 * d1 + l * d2)
    return u + dx * (d1 + dx * (0.5 * d2 + dx * d3 / 6))


def _single_block(xi: Tensor, a: Tensor, b: Tensor, guess) -> tuple[Tensor, Tensor, Tensor]:
    """(u, log p_U(u) in float32, the start) on 1-D float64 tensors; NaN where |ξ| > DEEP_Z or
    left over."""
    if guess is None or torch.is_tensor(guess):
        start = guess
    else:  # (u, log p_U, ξ, a, b at the previous step of a chain, shift)
        start = chain_start(guess[0], guess[1], guess[2], xi, guess[3], guess[4]) + guess[5]
    # solve the smaller tail, as in _np_icdf: ξ > 0 is Beta(b, a) at −u (sign −1)
    flip = (xi > 0).to(xi.dtype)
    sign, swap = 1 - 2 * flip, (b - a) * flip
    aa, bb = a + swap, b - swap
    axi = xi.abs()
    logp = torch.log(torch.special.erfc(axi * _SQRT_HALF)) - _LOG_2  # log Φ(−|ξ|)
    if start is None:  # Boost's float32 inverse: within ~3e-5 but for rare extreme shapes
        x = torch.from_numpy(special.betaincinv(aa.float().numpy(), bb.float().numpy(),
                                                torch.exp(logp).float().numpy())).double()
        u = torch.log(x) - torch.log1p(-x)  # ±inf where p underflows in float32 (|ξ| > 13): float64 path
        start = u * sign
    else:
        u = start * sign
    u, lpu = _polish(logp, aa, bb, *_log_beta(aa, bb), u)
    u.mul_(sign)  # p_U of Beta(b, a) at −u is that of Beta(a, b) at u
    return u.masked_fill_(axi > DEEP_Z, math.nan), lpu.float(), start


def beta_logit_icdf_normal_single(xi: Tensor, a: Tensor, b: Tensor, guess=None) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`beta_logit_icdf_normal` to float32 precision (|Δu| ≲ :data:`SINGLE_TOL`) for inputs of
    one shape, without autograd: (u, log p_U(u), the start used). On the CPU ~1.5–2× faster than
    the float64 map from its own start, ~4× from a chain's.

    ``guess``: None (start from scipy's float32 ``betaincinv``), a tensor (a guess of u), or, along
    a chain, (u, log p_U(u), ξ, a, b) of the previous step and a shift added to
    :func:`chain_start`'s guess. Off the CPU (or with :data:`CPU_BACKEND` "torch"), and for fewer
    than :data:`SINGLE_MIN` elements without a guess, this is the float64 map. Elements the fast
    iteration leaves come from the float64 path. u and the start are float64, log p_U float32."""
    shape = xi.shape
    flat = [v.detach().to(torch.float64).reshape(-1).contiguous() for v in (xi, a, b)]
    xi, a, b = flat
    if xi.device.type != "cpu" or CPU_BACKEND != "scipy" or (guess is None and xi.numel() < SINGLE_MIN):
        u = _dispatch(_torch_icdf, _cpu_icdf, xi, a, b)
        return u.reshape(shape), beta_logit_log_density(u, a, b).float().reshape(shape), u.reshape(shape)
    if guess is not None:
        guess = guess.detach().to(torch.float64).reshape(-1) if torch.is_tensor(guess) else \
            [v.detach().expand(shape).reshape(-1) for v in guess]
    u, lpu, start = torch.empty_like(xi), torch.empty_like(xi, dtype=torch.float32), torch.empty_like(xi)
    # blocks one after the other, whatever the thread count (torch's ops and betainc use the threads)
    for i in range(0, xi.numel(), SINGLE_BLOCK):
        sl = slice(i, i + SINGLE_BLOCK)
        g = None if guess is None else guess[sl] if torch.is_tensor(guess) else [v[sl] for v in guess]
        u[sl], lpu[sl], start[sl] = _single_block(xi[sl], a[sl], b[sl], g)
    redo = torch.nonzero(torch.isnan(u)).squeeze(1)
    redo = redo[~torch.isnan(xi[redo] + a[redo] + b[redo])]  # NaN in, NaN out
    if redo.numel():
        u[redo] = _dispatch(_torch_icdf, _cpu_icdf, xi[redo], a[redo], b[redo])
        lpu[redo] = beta_logit_log_density(u[redo], a[redo], b[redo]).float()
    return u.reshape(shape), lpu.reshape(shape), start.reshape(shape)


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
    def forward(ctx, xi: Tensor, a: Tensor, b: Tensor, single: bool) -> Tensor:
        if single and xi.numel() >= SINGLE_MIN:
            u = beta_logit_icdf_normal_single(xi, a, b)[0].to(xi.dtype)
        else:
            u = _dispatch(_torch_icdf, _cpu_icdf, xi, a, b)
        ctx.save_for_backward(xi, a, b, u)
        return u

    @staticmethod
    def backward(ctx, grad: Tensor):
        xi, a, b, u = ctx.saved_tensors
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise NotImplementedError("the Beta inverse CDF is not differentiable in a, b")
        return grad * torch.exp(log_normal_pdf(xi) - beta_logit_log_density(u, a, b)), None, None, None


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


def beta_logit_icdf_normal(xi: Tensor, a: Tensor, b: Tensor, single: bool = False) -> Tensor:
    """u = logit F⁻¹_{a,b}(Φ(ξ)): standard normal noise to the logit of a Beta(a, b) variate.

    ξ ≤ 0 solves the lower tail with log Φ(ξ), ξ > 0 the lower tail of Beta(b, a) with log Φ(−ξ)
    (and negates), so both ends keep full relative precision in x and in 1 − x. ``single``: float32
    precision suffices (:func:`beta_logit_icdf_normal_single`, faster on the CPU).
    Differentiable in ξ: du/dξ = φ(ξ)/p_U(u)."""
    xi, a, b = torch.broadcast_tensors(xi, a, b)
    return _BetaLogitIcdfNormal.apply(xi, a, b, single)


def normal_from_beta_logit(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """ξ = Φ⁻¹(F_{a,b}(sigmoid(u))): the inverse of :func:`beta_logit_icdf_normal`.

    Uses the smaller tail; clamped to ±:data:`~.special.Z_MAX` where the CDF underflows (a state
    far in the tail of q_t(· | x̂0) in a reverse step). Differentiable in u (zero where clamped)."""
    u, a, b = torch.broadcast_tensors(u, a, b)
    return _NormalFromBetaLogit.apply(u, a, b)
