"""The regularised incomplete beta function and the Beta inverse CDF in logit space, in log space.

Like :mod:`.special`: vectorised, on the input's device (no host sync per iteration on
accelerators; the CPU stops early once converged), meant for float64. The Beta noise map (MATH.md
§2, §4) u = logit F⁻¹_{a,b}(Φ(ξ)) (:mod:`.beta_map`) runs on these numerics on accelerators.

Logit space: log x = −softplus(−u) and log(1 − x) = −softplus(u) keep full relative precision at
both ends, and Beta(a, b) at u is Beta(b, a) at −u. U = logit X has density p_U = x^a (1 − x)^b/B,
computed as K + a log(x/x̄) + b log((1 − x)/(1 − x̄)), x̄ = a/(a + b), K = log p_U(logit x̄) by
Stirling's series for a, b ≥ 10 (no cancellation; lnΓ(a) + lnΓ(b) − lnΓ(a + b) loses ~1e-10 at
a = b = 1e5), the ratios by log1p/expm1 of u − logit x̄ near x̄.

Incomplete beta: I_x(a, b) = p_U/a · h, h = 1/(1 + d₁/(1 + d₂/(1 + …))) with
d_{2m+1} = −(a+m)(a+b+m)x/((a+2m)(a+2m+1)), d_{2m} = m(b−m)x/((a+2m−1)(a+2m)) (modified Lentz),
for x < (a + 1)/(a + b + 2); beyond, the fraction of I_{1−x}(b, a), the other tail by
log(1 − e^v). Nothing under- or overflows (x may underflow: h → 1). The direct tail is accurate to
~1e-14 relative, less near the switch for a ≫ b (~4e-12 at a = 1e5, b ≈ 2: rounding amplified by
h); a tail reached by log(1 − e^v) has relative error ~1e-16/(the tail). The fraction needs
O(min(a, b)^{1/3}) terms in the bulk (~250 at a = b = 1e5, ≤ 15 for a, b ≤ 3): the CPU drops
converged elements as it goes; accelerators run :func:`cf_terms` terms (one host sync per call).

Inverse CDF: only the smaller tail is solved (ξ > 0: the lower tail of Beta(b, a) at −ξ), by
safeguarded Halley steps on g(u) = log F(u) − log p, p ≤ 1/2. g is increasing and concave
(log-concave density), so Newton lands at or below the root from either side; a bracket is kept
and a step leaving it falls back to Newton, then bisection. Start: the Cornish–Fisher expansion of
U = log G_a − log G_b (cumulants ψ, ψ′, ψ″, ψ‴), clamped between the power-law asymptotics
F ≈ x^a/(a B) and 1 − F ≈ (1 − x)^b/(b B) (bounds of the root), which replace it (refined by one
fixed-point step) where x or 1 − x ≲ 0.05/(a + b). g′ = p_U/F, g″, g‴ are closed-form: an element
stops once Halley's predicted error 10·A·step³ < 1e-15(1 + |u|) (accelerators test this only after
:data:`ICDF_ITERS` iterations, one host sync per iteration from then on). For a, b ≥ 1
and standard normal ξ that is one evaluation of the fraction at ν = a + b − 2 ≈ 9e3 and two at
ν ≲ 100; at most four on the test grid (a, b ∈ [0.05, 1e5], p ∈ [1e-300, 1/2]). Quantiles agree
with scipy to ~1e-12 relative in x and in 1 − x (``tests/numerics/test_incomplete_beta.py``).

:func:`beta_log_cdf` is differentiable in u (not in a, b): d log F/du = p_U/F.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from mstar_engine.numerics.special import log1mexp

#: On the CPU the fraction stops for an element once its last Lentz factor is within CF_EPS of 1,
#: checked every CF_CHECK_EVERY terms (converged elements leave the work once they are a quarter),
#: at most CF_MAX_TERMS terms (a = b = 1e8 would need ~2500).
CF_EPS = 1e-15
CF_CHECK_EVERY = 4
CF_MAX_TERMS = 20000
#: Halley iterations accelerators run without a convergence test (4 suffice on the test grid); after
#: them, and on the CPU from the first, converged elements stop, up to ICDF_MAX_ITERS.
ICDF_ITERS = 6
ICDF_MAX_ITERS = 40
#: The CPU stops an element once Halley's predicted error 10·A·step³ is below ICDF_TOL·(1 + |u|).
ICDF_TOL = 1e-15
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_STIRLING_MIN = 10.0  # Stirling's series for lnΓ(a) from here on (5 terms: error < 2e-14)


# ---------------------------------------------------------------------------------------- helpers
def _softplus(x: Tensor) -> Tensor:
    """log(1 + e^x) to full precision (torch's softplus returns x above its threshold, 20)."""
    return x.clamp(min=0.0) + torch.log1p(torch.exp(-x.abs()))


def _stirling_delta(a: Tensor) -> Tensor:
    """δ(a) = lnΓ(a) − (a − ½) log a + a − ½ log 2π by its asymptotic series (a ≥ 10)."""
    r = 1.0 / a
    r2 = r * r
    return r * (1 / 12 - r2 * (1 / 360 - r2 * (1 / 1260 - r2 * (1 / 1680 - r2 / 1188))))


def _log_density_at_mean(a: Tensor, b: Tensor) -> Tensor:
    """K(a, b) = log p_U at x̄ = a/(a+b) = a log x̄ + b log(1 − x̄) − ln B(a, b), without cancellation."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    c = a + b
    big_hi, big_lo = hi >= _STIRLING_MIN, lo >= _STIRLING_MIN
    # both below 10: all terms are O(10), the direct form is accurate
    direct = (-a * torch.log1p(b / a) - b * torch.log1p(a / b)
              - torch.lgamma(a) - torch.lgamma(b) + torch.lgamma(c))
    hi_s = torch.where(big_hi, hi, torch.full_like(hi, _STIRLING_MIN))
    lo_s = torch.where(big_lo, lo, torch.full_like(lo, _STIRLING_MIN))
    # f(lo) = lo log lo − lo − lnΓ(lo), by Stirling once lo ≥ 10
    f_lo = torch.where(big_lo, 0.5 * torch.log(lo_s) - _HALF_LOG_2PI - _stirling_delta(lo_s),
                       lo * torch.log(lo) - lo - torch.lgamma(lo))
    stirling = f_lo - 0.5 * torch.log1p(lo / hi) - _stirling_delta(hi_s) + _stirling_delta(hi_s + lo)
    return torch.where(big_hi, stirling, direct)


def _shape(a: Tensor, b: Tensor) -> tuple[Tensor, ...]:
    """Per-element constants of Beta(a, b): (a, b, logit x̄, −log x̄, −log(1 − x̄), K(a, b), the
    logit of the fraction's switch point (a + 1)/(a + b + 2))."""
    la, lb = torch.log1p(b / a), torch.log1p(a / b)
    return a, b, lb - la, la, lb, _log_density_at_mean(a, b), torch.log1p(a) - torch.log1p(b)


def _log_density(u: Tensor, s: tuple[Tensor, ...]) -> Tensor:
    """log p_U(u) = K + a log(x/x̄) + b log((1 − x)/(1 − x̄)); near x̄ (|d| ≤ 1, d = u − logit x̄)
    log(x/x̄) = −log1p((1 − x̄) expm1(−d)) and log((1 − x)/(1 − x̄)) = −log1p(x̄ expm1(d))."""
    a, b, m, la, lb, k, _ = s
    d = u - m
    near = d.abs() <= 1.0
    dn = torch.where(near, d, torch.zeros_like(d))
    c = a + b
    log_x = torch.where(near, -torch.log1p(b / c * torch.expm1(-dn)), la - _softplus(-u))
    log_y = torch.where(near, -torch.log1p(a / c * torch.expm1(dn)), lb - _softplus(u))
    return k + a * log_x + b * log_y


def beta_logit_log_density(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """log p_U(u) = a log x + b log(1 − x) − ln B(a, b), x = sigmoid(u): the log density of
    U = logit X for X ~ Beta(a, b), to ~1e-14 absolute for a, b up to 1e6 and beyond (the error of
    the terms a log x, b log(1 − x) themselves where they are large)."""
    u, a, b = torch.broadcast_tensors(u, a, b)
    return _log_density(u, _shape(a, b))


# ---------------------------------------------------------------------------------------- continued fraction
def cf_terms(a: Tensor, b: Tensor) -> int:
    """Terms of the fraction after which every Lentz factor is within 1e-15 of 1, for any x on its
    side (the accelerators' count, one host sync): 14 % or more above the count measured over
    a, b ∈ [1e-3, 1e6] (m = min(a, b), M = max(a, b))."""
    if a.numel() == 0:
        return 0
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    lo1 = lo.clamp(min=1.0)
    n = (12 + 8 * lo1 ** (1 / 3) * (1 + 0.12 * torch.log10(hi / lo1).clamp(min=0.0))
         + 10 * hi.clamp(max=1e3) ** (1 / 3) / (1 + lo))
    return int(torch.ceil(n.max()))


def _lentz_update(aa: Tensor, c: Tensor, d: Tensor, tiny: float) -> Tensor:
    """One modified-Lentz update with partial numerator aa (in place on c, d); returns c·d."""
    d.mul_(aa).add_(1.0)
    d.masked_fill_(d == 0, tiny).reciprocal_()
    c.reciprocal_().mul_(aa).add_(1.0)
    return c.masked_fill_(c == 0, tiny) * d


def _lentz_step(x, a, b, c_ab, m: int, c, d, h, tiny: float) -> Tensor:
    """Terms 2m and 2m + 1 of the fraction (in place on c, d, h); returns the last factor."""
    two_m = a + 2 * m
    h.mul_(_lentz_update((b - m) * x * m / ((two_m - 1) * two_m), c, d, tiny))  # d_{2m}
    delta = _lentz_update(-(a + m) * (c_ab + m) * x / (two_m * (two_m + 1)), c, d, tiny)  # d_{2m+1}
    h.mul_(delta)
    return delta


def _lentz(x: Tensor, y: Tensor, a: Tensor, b: Tensor, early_exit: bool) -> Tensor:
    """The continued fraction h of I_x(a, b) (modified Lentz), x on its side (1-D, y = 1 − x)."""
    tiny = torch.finfo(x.dtype).tiny
    c_ab = a + b
    c = torch.ones_like(x)
    # 1 + d₁ = (a y − b x + 1)/(a + 1) ≥ 2/(a+b+2): from y where that cancels less (a ≫ b, x → 1)
    d = torch.where(a * y + b * x + 1 < a + 1, (a * y - b * x + 1) / (a + 1), 1 - c_ab * x / (a + 1)).reciprocal()
    h = d.clone()
    if not early_exit:
        for m in range(1, cf_terms(a, b) + 1):
            _lentz_step(x, a, b, c_ab, m, c, d, h, tiny)
        return h
    out = torch.empty_like(x)
    idx = None  # the active elements' positions in ``out`` (None: all of them)
    for m in range(1, CF_MAX_TERMS + 1):
        delta = _lentz_step(x, a, b, c_ab, m, c, d, h, tiny)
        if m % CF_CHECK_EVERY and m < CF_MAX_TERMS:
            continue
        done = ~((delta - 1).abs() > max(CF_EPS, 4 * torch.finfo(x.dtype).eps))  # NaN (NaN input): done
        n_done = int(done.sum())
        if n_done == done.numel() or m == CF_MAX_TERMS:
            break
        if 4 * n_done >= done.numel():  # drop the converged elements from the work
            if idx is None:
                idx = torch.arange(x.numel(), device=x.device)
            out[idx[done]] = h[done]
            keep = ~done
            idx, x, a, b, c_ab, c, d, h = (v[keep] for v in (idx, x, a, b, c_ab, c, d, h))
    if idx is None:
        return h
    out[idx] = h
    return out


def _log_tails(u: Tensor, s: tuple[Tensor, ...], early_exit: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(log I_x(a, b), log(1 − I_x(a, b)), log p_U(u)) at x = sigmoid(u), one fraction per element:
    the tail on the fraction's convergent side directly, the other by log(1 − e^v)."""
    a, b, sw = s[0], s[1], s[6]
    log_pu = _log_density(u, s)
    flip = u > sw  # x > (a + 1)/(a + b + 2): the fraction of I_{1−x}(b, a)
    aa, bb = torch.where(flip, b, a), torch.where(flip, a, b)
    v = torch.where(flip, -u, u).reshape(-1)
    h = _lentz(torch.sigmoid(v), torch.sigmoid(-v), aa.reshape(-1), bb.reshape(-1), early_exit).reshape(u.shape)
    direct = log_pu - torch.log(aa) + torch.log(h)
    other = log1mexp(direct)
    return torch.where(flip, other, direct), torch.where(flip, direct, other), log_pu


# ---------------------------------------------------------------------------------------- inverse CDF
def _polygammas(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(ψ′(x), ψ″(x), ψ‴(x)) to ~1e-8 relative, for starting points (torch's polygamma(n ≥ 2) is
    ~50× slower): three recurrence steps up to x + 3, then the asymptotic series."""
    t1 = t2 = t3 = 0.0
    for k in range(3):
        r = (x + k).reciprocal()
        r2 = r * r
        t1, t2, t3 = t1 + r2, t2 - 2 * r2 * r, t3 + 6 * r2 * r2
    r = (x + 3).reciprocal()
    r2 = r * r
    p1 = r + r2 * (0.5 + r * (1 / 6 - r2 * (1 / 30 - r2 * (1 / 42 - r2 / 30))))
    p2 = -r2 * (1 + r * (1 + r * (0.5 - r2 * (1 / 6 - r2 * (1 / 6 - 0.3 * r2)))))
    p3 = r2 * r * (2 + r * (3 + r * (2 - r2 * (1 - r2 * (4 / 3 - 3 * r2)))))
    return t1 + p1, t2 + p2, t3 + p3


def _power_start(logp: Tensor, a: Tensor, b: Tensor, lnb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The small-x end, F ≈ x^a (1 − x)^b h/(a B), h ≈ 1/(1 − (a+b)x/(a+1)): (logit of the plain
    asymptotic x^a/(a B) = p, +inf where that x ≥ 1; the same after one fixed-point step with the
    other factors; x)."""
    log_x = ((logp + torch.log(a) + lnb) / a).clamp(max=0.0)
    x = torch.exp(log_x)
    small = x < 0.5 / (a + b + 1)
    xs = torch.where(small, x, torch.zeros_like(x))
    log_x1 = torch.where(small, log_x + (torch.log1p(-(a + b) * xs / (a + 1)) - b * torch.log1p(-xs)) / a, log_x)
    return log_x - log1mexp(log_x), log_x1 - log1mexp(log_x1.clamp(max=0.0)), x


def _bounds_and_start(logp: Tensor, z: Tensor, s: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """(lo, hi, start) for the lower-tail root of log F_{a,b}(u) = logp (see the module docstring).
    The bounds are widened by 1e-8·(1 + |u|) (float64): where they are exact (a = 1 or b = 1)
    rounding must not put the root outside."""
    a, b, m, la, lb, k, _ = s
    lnb = -a * la - b * lb - k
    u_tail, u_tail1, x_t = _power_start(logp, a, b, lnb)             # x → 0: F ≈ x^a/(a B)
    v_head, v_head1, y_h = _power_start(log1mexp(logp), b, a, lnb)   # x → 1: 1 − F ≈ (1 − x)^b/(b B)
    # Cornish–Fisher of U = log G_a − log G_b
    (pa1, pa2, pa3), (pb1, pb2, pb3) = _polygammas(a), _polygammas(b)
    var, sd = pa1 + pb1, torch.sqrt(pa1 + pb1)
    g1, g2 = (pa2 - pb2) / (var * sd), (pa3 + pb3) / (var * var)
    zc = z.clamp(-8.0, 8.0)
    w = zc + (zc * zc - 1) * g1 / 6 + (zc ** 3 - 3 * zc) * g2 / 24 - (2 * zc ** 3 - 5 * zc) * g1 * g1 / 36
    reliable = (g1.abs() < 1) & (g2.abs() < 2)
    w = torch.where(reliable, w, zc) + (z - zc)  # beyond ±8: linear in z
    u_cf = torch.digamma(a) - torch.digamma(b) + sd * w
    # The asymptotics bound the root: from below where b ≥ 1 (tail) or a ≤ 1 (head), from above where
    # b ≤ 1 (tail) or a ≥ 1 (head). The start is clamped into them; the bracket takes them only from
    # the end where x (or 1 − x) ≤ 1/2 (elsewhere they are ill-conditioned). ±inf says nothing.
    inf, nan = torch.full_like(u_cf, math.inf), torch.full_like(u_cf, math.nan)
    tail, head = torch.where(torch.isinf(u_tail), nan, u_tail), torch.where(torch.isinf(v_head), nan, -v_head)
    tail_ok, head_ok = x_t <= 0.5, y_h <= 0.5

    def side(t_use, h_use, pick, none):
        v = pick(torch.where(t_use, tail, nan), torch.where(h_use, head, nan))
        return torch.where(torch.isnan(v), none, v)
    lo_s, hi_s = side(b >= 1, a <= 1, torch.fmax, -inf), side(b <= 1, a >= 1, torch.fmin, inf)
    lo = side(tail_ok & (b >= 1), head_ok & (a <= 1), torch.fmax, -inf)
    hi = side(tail_ok & (b <= 1), head_ok & (a >= 1), torch.fmin, inf)
    widen = max(1e-8, 64 * torch.finfo(u_cf.dtype).eps)
    lo, hi = lo - widen * (1 + lo.abs()), hi + widen * (1 + hi.abs())
    start = torch.minimum(torch.maximum(u_cf, lo_s), hi_s)
    # a skewed shape where Cornish–Fisher fails (b < 1 ≤ a: both asymptotics bound from above;
    # a < 1 ≤ b: from below): start from the tighter one
    skewed = ~reliable & (torch.minimum(a, b) < 1) & (torch.maximum(a, b) >= 1)
    start = torch.where(skewed & (b < a) & (hi_s < inf), hi_s, torch.where(skewed & (a < b) & (lo_s > -inf), lo_s, start))
    start = torch.where(x_t * (a + b + 1) <= 0.05, u_tail1, start)   # power-law regimes
    start = torch.where(y_h * (a + b + 1) <= 0.05, -v_head1, start)
    start = torch.where(torch.isfinite(start), start, torch.where(torch.isfinite(lo), lo, hi))
    return lo, hi, start


def _lower_logit_icdf(logp: Tensor, z: Tensor, s: tuple[Tensor, ...], early_exit: bool,
                      iters: int = ICDF_MAX_ITERS) -> Tensor:
    """u with log F_{a,b}(u) = logp for logp ≤ log ½ (1-D tensors, ``s`` from :func:`_shape`);
    z = Φ⁻¹(e^{logp})."""
    lo, hi, u = _bounds_and_start(logp, z, s)
    out = u.clone()
    idx = torch.arange(u.numel(), device=u.device)
    for i in range(iters):
        log_f, _, log_pu = _log_tails(u, s, early_exit)
        a, b = s[0], s[1]
        g = log_f - logp
        g1 = torch.exp(log_pu - log_f)  # g' = p_U/F
        x = torch.sigmoid(u)
        lp = a - (a + b) * x            # d log p_U/du
        g2 = g1 * (lp - g1)
        newton = g / g1
        denom = 1 - 0.5 * newton * g2 / g1
        halley = newton / denom.clamp(min=0.5, max=2.0)
        lo = torch.where(g < 0, u, lo)
        hi = torch.where(g > 0, u, hi)
        u_h, u_n = u - halley, u - newton
        in_h = torch.isfinite(u_h) & (u_h >= lo) & (u_h <= hi)
        in_n = torch.isfinite(u_n) & (u_n >= lo) & (u_n <= hi)
        mid = torch.where(torch.isfinite(lo) & torch.isfinite(hi), 0.5 * (lo + hi),
                          torch.where(torch.isfinite(lo), lo + 1 + lo.abs(), hi - 1 - hi.abs()))
        u_next = torch.where(g == 0, u, torch.where(in_h, u_h, torch.where(in_n, u_n, mid)))
        if (not early_exit and i + 1 < ICDF_ITERS) or i + 1 == iters:
            u = u_next
            continue
        # Halley's error constant A = |g‴/(6g′) − (g″/(2g′))²| predicts the error left: A·step³
        g3 = g2 * (lp - g1) + g1 * (-(a + b) * x * (1 - x) - g2)
        a_err = (g3 / (6 * g1) - (g2 / (2 * g1)) ** 2).abs()
        step = (u_next - u).abs()
        tol = ICDF_TOL * (1 + u_next.abs())
        halley_ok = in_h & (denom >= 0.5) & (denom <= 2.0) & (step * (g2 / g1).abs() <= 1e-2)
        done = (g == 0) | (halley_ok & (10 * a_err * step ** 3 <= tol)) | (hi - lo <= tol) | torch.isnan(u_next)
        out[idx[done]] = u_next[done]
        keep = ~done
        if not bool(keep.any()):
            return out
        idx, u, lo, hi, logp = (v[keep] for v in (idx, u_next, lo, hi, logp))
        s = tuple(v[keep] for v in s)
    out[idx] = u
    return out


# ---------------------------------------------------------------------------------------- public maps
class _BetaLogCdf(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, a: Tensor, b: Tensor, upper: Tensor) -> Tensor:
        log_lower, log_upper, log_pu = _log_tails(u, _shape(a, b), u.device.type == "cpu")
        out = torch.where(upper, log_upper, log_lower)
        ctx.save_for_backward(upper, out, log_pu)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        upper, out, log_pu = ctx.saved_tensors
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise NotImplementedError("the incomplete beta function is not differentiable in a, b here")
        slope = torch.exp(log_pu - out)  # d log F/du = p_U/F, d log(1 − F)/du = −p_U/(1 − F)
        return grad * torch.where(upper, -slope, slope), None, None, None


def beta_log_cdf(u: Tensor, a: Tensor, b: Tensor, upper: Tensor | bool = False) -> Tensor:
    """log I_x(a, b) (``upper``: log(1 − I_x(a, b))) at x = sigmoid(u): the log regularised incomplete
    beta function, to ~1e-14 relative (4e-12 for a ≫ b) on the side where the fraction is evaluated, to
    ~1e-16/(the tail probability) on the other (see the module docstring). ``upper`` may be a
    boolean tensor (per element). Differentiable in u."""
    u, a, b = torch.broadcast_tensors(u, a, b)
    upper = torch.as_tensor(upper, device=u.device).expand(u.shape)
    return _BetaLogCdf.apply(u, a, b, upper)
