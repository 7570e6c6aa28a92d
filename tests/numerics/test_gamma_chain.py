"""The Gamma map along a chain (numerics/gamma_chain.py, issue #17): the start's Taylor series and
∂y/∂log a against the float64 map itself (finite differences), and the float32-precision solve
against the float64 map from good, poor and absurd starts."""
import math

import pytest
import torch

from mstar_engine.numerics import gamma_chain as GC
from mstar_engine.numerics.special import gamma_log_icdf_normal

F64 = torch.float64


def exact(xi: torch.Tensor, a: float) -> torch.Tensor:
    return gamma_log_icdf_normal(xi, torch.full_like(xi, a))


@pytest.mark.parametrize("a", [0.7, 1.0, 3.5, 120.0, 1e4])
def test_taylor_start_in_xi_has_third_order_error(a):
    """At fixed a the start's error shrinks like dξ⁴ (halving dξ divides it by about 16) down to
    float32 rounding of the increment (measured: 1e-4 → 6e-6 at a = 0.7; ≤ 3e-8 at a ≥ 120, where y
    is nearly linear in ξ)."""
    xi = torch.linspace(-3, 3, 13, dtype=F64)
    y = exact(xi, a)
    zero = torch.zeros_like(xi, dtype=torch.float32)
    errors = []
    for dx in (0.32, 0.16):
        start, _ = GC.chain_start(y, xi, xi + dx, a, zero, 0.0)
        errors.append(float((start - exact(xi + dx, a)).abs().max()))
    assert errors[0] < 2e-4 and errors[1] <= max(errors[0] / 10, 1e-8), errors


@pytest.mark.parametrize("a", [1.5, 40.0, 3000.0])
def test_log_shape_derivative_is_moved_along_xi(a):
    """With D = ∂y/∂log a at ξ (central differences of the float64 map), the D returned at ξ + dξ
    is ∂y/∂log a there to first order in dξ."""
    xi = torch.linspace(-2.5, 2.5, 11, dtype=F64)
    h = 1e-4

    def d_log_a(x):
        return (exact(x, a * math.exp(h)) - exact(x, a * math.exp(-h))) / (2 * h)

    dx = 0.05
    _, moved = GC.chain_start(exact(xi, a), xi, xi + dx, a, d_log_a(xi).float(), 0.0)
    target, stale = d_log_a(xi + dx), d_log_a(xi)
    err, err_stale = (moved.double() - target).abs().max(), (stale - target).abs().max()
    assert err < 0.05 * err_stale, (float(err), float(err_stale))


@pytest.mark.parametrize("a", [0.3, 1.0, 7.0, 500.0, 1e4])
def test_single_solve_is_the_float64_map_to_float32_precision(a):
    g = torch.Generator().manual_seed(3)
    xi = torch.cat([torch.randn(4000, generator=g, dtype=F64), torch.tensor([-8.0, 8.0, -35.0, 35.0], dtype=F64)])
    ref = exact(xi, a)
    close = ref + 1e-4 * torch.randn(xi.shape, generator=g, dtype=F64)  # a carried start
    poor = ref + 0.3 * torch.randn(xi.shape, generator=g, dtype=F64)
    absurd = torch.full_like(xi, -1.78e14)
    absurd[::3] = 1e6
    absurd[1::3] = math.nan
    for start in (close, poor, absurd):
        y = GC.gamma_log_icdf_normal_single(xi, a, start)
        assert float((y - ref).abs().max()) <= 1e-8 * (1 + float(ref.abs().max()))


def test_one_halley_step_from_a_close_start(monkeypatch):
    """From a start within ~1e-5 (a carried start mid-chain) one incomplete gamma per element."""
    calls = []
    real = GC._halley_step
    monkeypatch.setattr(GC, "_halley_step", lambda y, *rest: calls.append(y.numel()) or real(y, *rest))
    xi = torch.randn(5000, generator=torch.Generator().manual_seed(4), dtype=F64)
    ref = exact(xi, 20.0)
    GC.gamma_log_icdf_normal_single(xi, 20.0, ref + 1e-5)
    assert calls == [5000]
