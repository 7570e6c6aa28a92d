"""The float32-precision Beta noise map (mstar_engine.numerics.beta_map, ``single``) against the
float64 map, whose own oracle tests are tests/numerics/test_incomplete_beta.py.

Tolerances: the fast path stops once its predicted logit error is below SINGLE_TOL = 1e-8, counting
the error of its float32 lnΓ; asserted |Δu| ≤ 3e-8 (x and 1 − x within 3e-8 relative, half a
float32 ulp), measured ≤ 1e-9 on these grids. The float32 outputs x = sigmoid(u) and 1 − x then
match the float64 map's rounded values to within one float32 ulp.
"""
import numpy as np
import pytest
import scipy.special as sc
import torch

from mstar_engine.numerics import beta_map as BM

F64 = torch.float64
U_TOL = 3e-8
NUS = [1e-3, 3e-3, 0.01, 0.09, 0.37, 1.0, 2.4, 4.7, 13.8, 33.0, 126.0, 557.0, 2886.0, 1e4]
X0S = [1e-6, 0.01, 0.3, 0.5, 0.77, 0.99, 1 - 1e-6]


def T(v):
    return torch.as_tensor(np.asarray(v, dtype=np.float64))


def beta_grid(n_xi=61, seed=0):
    """Beta-family shapes a = 1 + ν x0, b = 1 + ν(1 − x0) over the schedule's range, ξ across ±8 and
    a few random draws."""
    rng = np.random.default_rng(seed)
    xi = np.concatenate([np.linspace(-8, 8, n_xi), rng.standard_normal(20), [0.0, -1e-9, 1e-9, 30.0, -35.9]])
    nu, x0, z = np.meshgrid(NUS, X0S, xi, indexing="ij")
    return T(z.ravel()), T(1 + nu * x0).ravel(), T(1 + nu * (1 - x0)).ravel()


@pytest.fixture(autouse=True)
def any_size(monkeypatch):
    """The fast path also for the small grids here (by default it leaves < SINGLE_MIN elements
    without a start to the float64 map)."""
    monkeypatch.setattr(BM, "SINGLE_MIN", 0)


def exact(xi, a, b):
    return BM.beta_logit_icdf_normal(xi, a, b)


def assert_close(u, ref, tol=U_TOL):
    err = (u - ref).abs()
    assert torch.isfinite(u).all() and err.max() <= tol, (err.max().item(), int(err.argmax()))
    # what float32 outputs see: x and 1 − x within one ulp of the float64 map's rounded values
    for sign in (1, -1):
        ours, theirs = torch.sigmoid(sign * u).float(), torch.sigmoid(sign * ref).float()
        ulp = torch.nextafter(theirs, torch.full_like(theirs, np.inf)) - theirs
        assert ((ours - theirs).abs() <= ulp).all()


def test_beta_shapes_from_its_own_start():
    xi, a, b = beta_grid()
    u, lpu, start = BM.beta_logit_icdf_normal_single(xi, a, b)
    assert u.dtype == F64 and lpu.dtype == torch.float32 and start.shape == u.shape
    ref = exact(xi, a, b)
    assert_close(u, ref)
    dens = BM.beta_logit_log_density(ref, a, b)
    assert ((lpu.double() - dens).abs() <= 1e-5 * (1 + dens.abs())).all()


@pytest.mark.parametrize("off", [1e-4, 1e-3, 1e-2, 0.1, 1.0, 20.0])
def test_any_start_converges(off):
    """Starts off by up to ±off (random sign), including ones far in the wrong tail."""
    xi, a, b = beta_grid(seed=1)
    ref = exact(xi, a, b)
    g = torch.Generator().manual_seed(2)
    start = ref + off * (2 * torch.rand(ref.shape, dtype=F64, generator=g) - 1)
    u, _, used = BM.beta_logit_icdf_normal_single(xi, a, b, start)
    assert torch.equal(used, start)
    assert_close(u, ref)


def test_useless_starts_fall_back():
    xi, a, b = beta_grid(n_xi=11, seed=3)
    ref = exact(xi, a, b)
    for bad in (torch.full_like(ref, float("nan")), torch.full_like(ref, float("inf")), -ref.sign() * 1e3):
        assert_close(BM.beta_logit_icdf_normal_single(xi, a, b, bad)[0], ref)


def test_general_shapes_and_far_tails():
    """Shapes off the Beta family (a or b < 1, a ≫ b) and noise out to the deep tails, where the
    torch numerics take over (|ξ| > DEEP_Z) or the iteration hands elements to the float64 path."""
    shapes = [0.05, 0.3, 1.0, 2.5, 10.0, 100.0, 9e3, 1e5]
    probs = [1e-300, 1e-100, 1e-20, 1e-5, 0.01, 0.3, 0.5]
    a, b, p = (v.ravel() for v in np.meshgrid(shapes, shapes, probs, indexing="ij"))
    xi = np.concatenate([sc.ndtri(p), -sc.ndtri(p)])
    a, b = np.concatenate([a, a]), np.concatenate([b, b])
    ref = exact(T(xi), T(a), T(b))
    u = BM.beta_logit_icdf_normal_single(T(xi), T(a), T(b))[0]
    assert_close(u, ref, tol=U_TOL * 10)  # |u| reaches 700 here; x and 1 − x are what matter
    assert ((u - ref).abs() <= U_TOL * (1 + ref.abs())).all()


def test_chain_start_is_the_taylor_series_in_xi():
    """chain_start moves u(ξ) to u(ξ') with a third-order error: halving ξ' − ξ divides it by ~16."""
    g = torch.Generator().manual_seed(4)
    n = 2000
    x0 = torch.rand(n, dtype=F64, generator=g)
    a, b = 1 + 3.0 * x0, 1 + 3.0 * (1 - x0)
    xi = torch.randn(n, dtype=F64, generator=g)
    u = exact(xi, a, b)
    lpu = BM.beta_logit_log_density(u, a, b)
    errs = []
    for h in (0.4, 0.2):
        xi2 = xi + h
        errs.append((BM.chain_start(u, lpu, xi, xi2, a, b) - exact(xi2, a, b)).abs().max().item())
    assert errs[0] < 1e-3 and 12 < errs[0] / errs[1] < 24, errs


def test_threads_and_blocks_do_not_change_the_numbers(monkeypatch):
    """The blocks are the same whatever the thread count: the same numbers. Other blocks (or a part
    of the batch) change an element's value only through lnΓ(a + b) taken once per block (~1e-15)."""
    xi, a, b = beta_grid(seed=5)
    threads = torch.get_num_threads()
    monkeypatch.setattr(BM, "SINGLE_BLOCK", 4096)
    try:
        torch.set_num_threads(1)
        one = BM.beta_logit_icdf_normal_single(xi, a, b)[0]
        torch.set_num_threads(3)
        several = BM.beta_logit_icdf_normal_single(xi, a, b)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, several)
    monkeypatch.setattr(BM, "SINGLE_BLOCK", 1000)
    assert torch.allclose(BM.beta_logit_icdf_normal_single(xi, a, b)[0], one, rtol=1e-13, atol=1e-13)
    part = slice(3000, 3300)
    assert torch.allclose(BM.beta_logit_icdf_normal_single(xi[part], a[part], b[part])[0], one[part],
                          rtol=1e-13, atol=1e-13)


def test_single_flag_of_the_autograd_map(monkeypatch):
    xi, a, b = beta_grid(n_xi=9, seed=6)
    xi = xi.clamp(-30, 30).requires_grad_()
    u = BM.beta_logit_icdf_normal(xi, a, b, single=True)
    ref = exact(xi.detach(), a, b)
    assert_close(u.detach(), ref)
    (grad,) = torch.autograd.grad(u.sum(), xi)
    (grad_ref,) = torch.autograd.grad(BM.beta_logit_icdf_normal(xi, a, b).sum(), xi)
    assert torch.allclose(grad, grad_ref, rtol=1e-6, atol=0)
    # the torch backend (as on accelerators) runs the float64 map
    monkeypatch.setattr(BM, "CPU_BACKEND", "torch")
    fallback = BM.beta_logit_icdf_normal_single(xi.detach(), a, b)[0]
    assert torch.equal(fallback, BM.beta_logit_icdf_normal(xi, a, b).detach())


def test_small_inputs_without_a_start_take_the_float64_map(monkeypatch):
    monkeypatch.setattr(BM, "SINGLE_MIN", 1024)
    xi, a, b = beta_grid(n_xi=3)
    xi, a, b = xi[:1000], a[:1000], b[:1000]
    u, lpu, start = BM.beta_logit_icdf_normal_single(xi, a, b)
    assert torch.equal(u, exact(xi, a, b)) and torch.equal(start, u)
    assert torch.equal(BM.beta_logit_icdf_normal(xi, a, b, single=True), u)


def test_nan_in_nan_out():
    nan = float("nan")
    u = BM.beta_logit_icdf_normal_single(T([nan, 0.3, 0.3, 0.2]), T([2.0, nan, 2.0, 2.0]), T([3.0, 3.0, nan, 3.0]))[0]
    assert torch.isnan(u[:3]).all() and torch.isfinite(u[3])
