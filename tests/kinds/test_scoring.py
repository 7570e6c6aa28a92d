"""Oracles for mstar_engine.kinds.scoring: closed-form expectations of the energy and kernel
scores, their propriety, the Gaussian bridge against Gaussian conditioning, and Algorithm 2 with
the exact posterior-sampling denoiser of Gaussian data.

Monte Carlo tolerances are Z standard errors estimated from the samples themselves (Z = 5: a
false alarm has probability ~6e-7 per check; seeds are fixed anyway, so the tests are
deterministic). Every check is sized so that the bug it targets moves the statistic by many
standard errors (the margins are noted next to each test)."""
from __future__ import annotations

import functools
import math

import pytest
import torch

from mstar_engine.kinds.scoring import (SCORES, bridge_step, energy_score, kernel_score,
                                        linear_schedule, sample_distributional, score, time_grid)

Z = 5.0
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _within(samples: torch.Tensor, expected: float) -> None:
    """Mean of the samples equals ``expected`` within Z standard errors."""
    mean, se = samples.mean().item(), samples.std().item() / math.sqrt(samples.numel())
    assert abs(mean - expected) < Z * se, f"mean {mean:.6g} vs {expected:.6g} (se {se:.3g})"


# --------------------------------------------------------------------------- energy / kernel


def test_energy_score_hand_computed_and_norm_over_event_dims():
    # draws 0, 1, 3 and target 1, β = 1: confinement (1+0+2)/3 = 1, pair mean (1+3+2)/3 = 2,
    # score 1 − 2/2 = 0. eps = 1e-12 moves each distance by <= 1e-6, hence the 1e-5 tolerance.
    draws = torch.tensor([[0.0, 1.0, 3.0]], dtype=F64).unsqueeze(-1)
    value = energy_score(draws, torch.tensor([[1.0]], dtype=F64), beta=1.0).item()
    assert value == pytest.approx(0, abs=1e-5)
    # event dims (2, 3) are flattened into one Euclidean norm: a 3-4-5 triangle.
    g = torch.zeros(1, 2, 2, 3, dtype=F64)
    g[0, 1, 0, 0], g[0, 1, 1, 2] = 3.0, 4.0
    x = torch.zeros(1, 2, 3, dtype=F64)
    # confinement (0 + 5)/2, interaction 5  ->  2.5 − λ/2 · 5 with λ = 0.5
    assert energy_score(g, x, beta=1.0, lam=0.5).item() == pytest.approx(2.5 - 1.25, abs=1e-5)
    assert energy_score(g, x, beta=2.0, lam=0.0).item() == pytest.approx(12.5, abs=1e-9)


def _normal_abs_moment(y: float, mu: float, sigma: float) -> float:
    """E|X − y| for X ~ N(mu, sigma²)."""
    d = y - mu
    phi = 0.5 * math.erfc(d / sigma / math.sqrt(2.0))  # Φ(−d/σ)
    return sigma * math.sqrt(2 / math.pi) * math.exp(-d * d / (2 * sigma ** 2)) + d * (1 - 2 * phi)


@pytest.mark.parametrize("y", [-1.3, 0.4, 2.5])
def test_energy_score_expectation_matches_closed_form(y):
    # 1-D X ~ N(μ, σ²), β = λ = 1: E S = E|X − y| − E|X − X'|/2, E|X − X'| = 2σ/√π.
    # 60k examples of m = 8 draws: se ≈ 2e-3; a 1/m² (biased) pair normalisation would shift
    # the mean by E|X−X'|/(2m) ≈ 0.1 (≈ 50 se).
    mu, sigma, m, n = 0.7, 1.4, 8, 60_000
    draws = mu + sigma * torch.randn(n, m, 1, generator=_gen(1), dtype=F64)
    target = torch.full((n, 1), y, dtype=F64)
    expected = _normal_abs_moment(y, mu, sigma) - sigma / math.sqrt(math.pi)
    _within(energy_score(draws, target, beta=1.0, lam=1.0), expected)


@pytest.mark.parametrize("y", [-1.3, 0.4])
def test_kernel_score_expectation_matches_closed_form(y):
    # 1-D Gaussian kernel, X ~ N(μ, σ²): E k(X, y) = h/√(h²+σ²) exp(−(y−μ)²/(2(h²+σ²))),
    # E k(X, X') = h/√(h²+2σ²). se ≈ 7e-4 at 60k examples.
    mu, sigma, h, m, n = 0.2, 0.9, 0.8, 6, 60_000
    draws = mu + sigma * torch.randn(n, m, 1, generator=_gen(2), dtype=F64)
    target = torch.full((n, 1), y, dtype=F64)
    fit = h / math.sqrt(h * h + sigma ** 2) * math.exp(-(y - mu) ** 2 / (2 * (h * h + sigma ** 2)))
    expected = 0.5 * h / math.sqrt(h * h + 2 * sigma ** 2) - fit
    _within(kernel_score(draws, target, bandwidth=h, lam=1.0), expected)


@pytest.mark.parametrize("beta", [0.1, 1.0, 1.5])
@pytest.mark.parametrize("m", [2, 6])
def test_energy_interaction_term_is_unbiased(beta, m):
    # The i≠j mean, isolated as 2 (S(λ=0) − S(λ=1)), has expectation E||X − X'||^β for
    # X ~ N(0, σ² I_d): ||X−X'||² = 2σ² χ²_d, so E = (2σ)^β Γ((d+β)/2) / Γ(d/2).
    # m = 2 is the most sensitive case for a wrong normaliser (1/m² would halve it).
    d, sigma, n = 3, 0.8, 40_000
    draws = sigma * torch.randn(n, m, d, generator=_gen(3), dtype=F64)
    target = torch.randn(n, d, generator=_gen(4), dtype=F64)
    pair_mean = 2 * (energy_score(draws, target, beta=beta, lam=0.0)
                     - energy_score(draws, target, beta=beta, lam=1.0))
    expected = (2 * sigma) ** beta * math.exp(math.lgamma((d + beta) / 2) - math.lgamma(d / 2))
    _within(pair_mean, expected)


@functools.lru_cache(maxsize=1)
def _data_and_base_draws(n: int = 12_000, m: int = 8):
    return (torch.randn(n, 2, generator=_gen(5), dtype=F64),
            torch.randn(n, m, 2, generator=_gen(6), dtype=F64))


def _score_gap(kind: str, other: str, beta: float = 0.1, lam: float = 1.0):
    """Per-example S(P, y) − S(Q, y) with Q = N(0, I_2), y ~ Q, and common random numbers: the
    same y and the same base draws z for both models (P draws are a map of z)."""
    y, z = _data_and_base_draws()
    p = {"shift": z + 0.3, "scale": 1.5 * z, "half": 0.5 * z}[other]
    kw = dict(beta=beta, lam=lam, bandwidth=1.0)
    return score(kind, p, y, **kw) - score(kind, z, y, **kw)


@pytest.mark.parametrize("other", ["shift", "scale", "half"])
@pytest.mark.parametrize("kind,beta", [("energy", 0.1), ("energy", 1.0), ("kernel", 0.1)])
def test_scores_are_proper(kind, beta, other):
    # E_y S(Q, y) < E_y S(P, y) by > 5 se of the paired difference (observed margins 17–50 se
    # at 12k examples; the weakest is the 0.3-shift under β = 0.1 and the kernel, ~17 se).
    gap = _score_gap(kind, other, beta)
    mean, se = gap.mean().item(), gap.std().item() / math.sqrt(gap.numel())
    assert mean > Z * se, f"{kind} β={beta} {other}: gap {mean:.3g}, se {se:.3g}"


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_without_interaction_underdispersion_wins(beta):
    # λ = 0 keeps only the confinement term E||X − y||^β, minimised by collapsing P: the model
    # scaled by 0.5 beats the data law Q (observed ~115–200 se). This is why λ = 1 (strictly
    # proper) is the default: with it the same under-dispersed model loses (previous test).
    gap = _score_gap("energy", "half", beta, lam=0.0)
    mean, se = gap.mean().item(), gap.std().item() / math.sqrt(gap.numel())
    assert mean < -Z * se


@pytest.mark.parametrize("beta", [0.1, 1.0, 2.0])
def test_energy_score_gradients_finite_at_coincident_points(beta):
    target = torch.randn(3, 4, dtype=F64, generator=_gen(7))
    draws = target.unsqueeze(1).repeat(1, 5, 1)        # all draws equal each other and the target
    draws[0, 1] += 1.0                                 # one example with only some coincidences
    for dtype in (torch.float32, F64):
        d = draws.to(dtype).requires_grad_(True)
        x = target.to(dtype).requires_grad_(True)
        value = energy_score(d, x, beta=beta).sum()
        value.backward()
        assert torch.isfinite(value)
        assert torch.isfinite(d.grad).all() and torch.isfinite(x.grad).all()


def test_validation_and_dispatch():
    draws, target = torch.randn(4, 3, 2), torch.randn(4, 2)
    with pytest.raises(ValueError, match="m >= 2"):
        energy_score(draws[:, :1], target)
    for beta in (0.0, -1.0, 2.5):
        with pytest.raises(ValueError, match="beta"):
            energy_score(draws, target, beta=beta)
    with pytest.raises(ValueError, match="lam"):
        energy_score(draws, target, lam=-0.1)
    with pytest.raises(ValueError, match="lam"):
        kernel_score(draws, target, lam=-0.1)
    with pytest.raises(ValueError, match="shape"):
        energy_score(draws, torch.randn(4, 3))
    assert SCORES == ("energy", "kernel")
    assert torch.equal(score("energy", draws, target, beta=0.5, lam=0.7, bandwidth=9.0),
                       energy_score(draws, target, beta=0.5, lam=0.7))
    assert torch.equal(score("kernel", draws, target, beta=0.5, lam=0.7, bandwidth=2.0),
                       kernel_score(draws, target, bandwidth=2.0, lam=0.7))
    with pytest.raises(ValueError, match="energy, kernel"):
        score("crps", draws, target)


# --------------------------------------------------------------------------- bridge


def _posterior_by_conditioning(x_t, x0, t: float, s: float):
    """Mean and variance of x_s | x_t, x0 from the joint Gaussian of (x_s, x_t) given x0, built
    from the forward chain x_t = α_{t|s} x_s + σ_{t|s} z (independent of the module's algebra)."""
    a_s, sig_s = 1 - s, s
    a_t, sig_t = 1 - t, t
    a_ts = a_t / a_s
    cov = a_ts * sig_s ** 2                      # Cov(x_s, x_t)
    return a_s * x0 + cov / sig_t ** 2 * (x_t - a_t * x0), sig_s ** 2 - cov ** 2 / sig_t ** 2


PAIRS = [(1.0, 0.5), (1.0, 0.02), (0.7, 0.3), (0.3, 0.1), (0.9, 0.85), (0.5, 0.0)]


@pytest.mark.parametrize("t,s", PAIRS)
def test_bridge_eta_one_is_the_gaussian_posterior(t, s):
    # bridge_step is affine in the noise: mean = step(noise=0), std = step(1) − step(0).
    # Exact algebra in float64, so the tolerance is rounding only (1e-12).
    x_t = torch.randn(16, 3, generator=_gen(8), dtype=F64)
    x0 = torch.randn(16, 3, generator=_gen(9), dtype=F64)
    zero, one = torch.zeros_like(x_t), torch.ones_like(x_t)
    mean = bridge_step(x_t, x0, t, s, zero, eta=1.0)
    std = bridge_step(x_t, x0, t, s, one, eta=1.0) - mean
    ref_mean, ref_var = _posterior_by_conditioning(x_t, x0, t, s)
    torch.testing.assert_close(mean, ref_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(std ** 2, torch.full_like(std, ref_var), rtol=0, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("t,s", PAIRS[:5])
def test_bridge_preserves_the_marginal(eta, t, s):
    # x_t ~ N(α_t x0, σ_t²), x_s = bridge(x_t, x0): x_s ~ N(α_s x0, σ_s²) for every η. 100k
    # draws; mean and variance each within 5 se (se of the variance from the 4th moment).
    # A wrong √(σ_s² − c²) (e.g. σ_s for every η) changes the variance by > 10 se.
    n, x0 = 100_000, 0.8
    a_t, sig_t = linear_schedule(t)
    a_s, sig_s = linear_schedule(s)
    x_t = a_t * x0 + sig_t * torch.randn(n, 1, generator=_gen(10), dtype=F64)
    noise = torch.randn(n, 1, generator=_gen(11), dtype=F64)
    x_s = bridge_step(x_t, torch.full_like(x_t, x0), t, s, noise, eta=eta)
    _within(x_s, a_s * x0)
    _within((x_s - a_s * x0) ** 2, sig_s ** 2)


def test_bridge_endpoints_and_per_row_times():
    x_t = torch.randn(6, 2, 2, generator=_gen(12))
    x0 = torch.randn(6, 2, 2, generator=_gen(13))
    noise = torch.randn(6, 2, 2, generator=_gen(14))
    for eta in (0.0, 0.5, 1.0):
        assert torch.equal(bridge_step(x_t, x0, 0.37, 0.0, noise, eta), x0)      # s = 0 exact
        assert torch.equal(bridge_step(x_t, x0, 1.0, 0.0, noise, eta), x0)
        assert torch.isfinite(bridge_step(x_t, x0, 1.0, 0.6, noise, eta)).all()  # t = 1 (α_t = 0)
    # at t = 1, η = 1, the posterior ignores x_t: N(α_s x0, σ_s²) exactly
    torch.testing.assert_close(bridge_step(x_t, x0, 1.0, 0.6, noise), 0.4 * x0 + 0.6 * noise)
    t = torch.tensor([1.0, 0.9, 0.5, 0.5, 0.2, 1.0])
    s = torch.tensor([0.0, 0.3, 0.0, 0.25, 0.1, 0.99])
    rows = bridge_step(x_t, x0, t, s, noise, eta=0.5)
    for b in range(6):
        one = bridge_step(x_t[b:b + 1], x0[b:b + 1], t[b].item(), s[b].item(), noise[b:b + 1], 0.5)
        torch.testing.assert_close(rows[b:b + 1], one)
    assert torch.equal(rows[s == 0], x0[s == 0])
    for bad_t, bad_s in [(0.5, 0.5), (0.4, 0.6), (1.2, 0.5), (0.5, -0.1)]:
        with pytest.raises(ValueError, match="0 <= s < t <= 1"):
            bridge_step(x_t, x0, bad_t, bad_s, noise)


def test_time_grid():
    assert time_grid(1) == [1.0, 0.0]
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError):
        time_grid(0)


# --------------------------------------------------------------------------- Algorithm 2


def test_sampler_calls_net_steps_times_with_batched_times():
    seen, called = [], []

    def net(x, t, xi):
        assert t.shape == (x.shape[0],) and xi.shape == x.shape
        seen.append(t[0].item())
        return xi

    for steps in (1, 3, 5):
        seen.clear(), called.clear()
        x1 = torch.randn(7, 2, generator=_gen(15))
        out = sample_distributional(net, x1, steps, generator=_gen(16),
                                    callback=lambda k, t, x, x0: called.append((k, t)))
        assert len(seen) == steps and seen == pytest.approx(time_grid(steps)[:-1])
        assert called == [(k, time_grid(steps)[k]) for k in range(steps)]
        assert out.shape == x1.shape
        again = sample_distributional(net, x1, steps, generator=_gen(16))
        assert torch.equal(out, again)                                  # generator-driven


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_sampler_follows_the_bridge_and_the_documented_rng_order(eta):
    # Replays Algorithm 2 by hand: per step ξ then (except last) bridge noise from the generator.
    # Needed because the Gaussian oracle below cannot see η: with an exact posterior sampler,
    # (x̂0, ε̂) has the law of (x0, ε), so every η gives exact marginals.
    def net(x, t, xi):
        return 0.5 * x + xi * t[:, None]

    x1 = torch.randn(5, 3, generator=_gen(19), dtype=F64)
    out = sample_distributional(net, x1, 3, generator=_gen(20), eta=eta)
    gen, x, grid = _gen(20), x1, time_grid(3)
    for k in range(3):
        x0_hat = net(x, torch.full((5,), grid[k], dtype=F64), torch.randn(5, 3, generator=gen, dtype=F64))
        if k < 2:
            x = bridge_step(x, x0_hat, grid[k], grid[k + 1], torch.randn(5, 3, generator=gen, dtype=F64), eta)
    assert torch.equal(out, x0_hat)


MU, S0 = 1.5, 0.6


def _posterior_net(sample: bool):
    """Exact denoiser for 1-D data x0 ~ N(μ, s0²): the Gaussian law of x0 | x_t, with precision
    1/s0² + α_t²/σ_t² and mean (μ/s0² + α_t x_t/σ_t²) / precision; ξ draws from it when
    ``sample`` (distributional), else the posterior mean is returned (a deterministic net)."""
    def net(x, t, xi):
        a, sig = linear_schedule(t[:, None])
        precision = 1 / S0 ** 2 + a ** 2 / sig ** 2
        mean = (MU / S0 ** 2 + a * x / sig ** 2) / precision
        return mean + xi / precision.sqrt() if sample else mean
    return net


@pytest.mark.parametrize("steps", [1, 2, 8])
def test_exact_denoiser_gives_the_data_law_in_any_number_of_steps(steps):
    # 100k samples: mean and variance of the output within 5 se of N(μ, s0²). The deterministic
    # posterior-mean net (checked below) misses the variance by hundreds of se, so the tolerance
    # discriminates.
    x1 = torch.randn(100_000, 1, generator=_gen(17), dtype=F64)
    out = sample_distributional(_posterior_net(True), x1, steps, generator=_gen(18), eta=1.0)
    _within(out, MU)
    _within((out - MU) ** 2, S0 ** 2)


def test_posterior_mean_net_fails_the_same_check():
    x1 = torch.randn(100_000, 1, generator=_gen(17), dtype=F64)
    out = sample_distributional(_posterior_net(False), x1, 2, generator=_gen(18), eta=1.0)
    with pytest.raises(AssertionError):
        _within((out - MU) ** 2, S0 ** 2)
