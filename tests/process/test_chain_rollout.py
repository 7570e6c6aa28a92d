"""Coupled roll-outs with each solve's start carried down the chain (issue #17): Beta
(``Beta.from_noise_along``), Dirichlet's sticks (``Dirichlet.from_noise_along``) and Gamma
(``Gamma.from_noise_along``). The same draws as the plain float64 noise map to one float32 ulp,
about one CDF evaluation per element and step mid-chain, and the float64 roll-out untouched."""
import math

import pytest
import torch

from mstar_engine.families.beta import Beta
from mstar_engine.families.dirichlet import Dirichlet
from mstar_engine.families import gamma as gamma_module
from mstar_engine.families.gamma import Gamma
from mstar_engine.families.wishart import Wishart
from mstar_engine.numerics import beta_map as BM
from mstar_engine.numerics import gamma_chain as GC
from mstar_engine.process.forward import rollout
from mstar_engine.schedules import build_coupling, build_schedule, gaussian_equivalent_snr

F64 = torch.float64
FAMILIES = {Beta: ("beta-cosine", (3, 4, 4)), Dirichlet: ("dirichlet-exp", (8, 3)), Gamma: ("gamma-exp", (3, 4, 4)),
            Wishart: ("wishart-exp", (2, 2))}
ALL = list(FAMILIES)


def chain(cls, steps: int):
    """The family on its published schedule, and the ddpm coupling of its Gaussian-equivalent SNR."""
    schedule, shape = FAMILIES[cls]
    fam = cls(shape, **build_schedule(schedule, steps))
    snr = gaussian_equivalent_snr(schedule, steps, family=cls.name, event_shape=shape)
    return fam, build_coupling("ddpm", steps, snr=snr)


def data(fam, n: int, g: torch.Generator, dtype=torch.float32, low: float = 1e-4):
    """n points of the family's domain, the first two at its edges."""
    if isinstance(fam, Wishart):  # A Aᵀ + I/10, and one nearly singular matrix
        a = torch.randn((n, 2, 2), generator=g, dtype=dtype)
        x0 = a @ a.transpose(1, 2) + 0.1 * torch.eye(2, dtype=dtype)
        x0[0] = torch.tensor([[1.0, 0.999], [0.999, 1.0]], dtype=dtype)
        return x0
    if isinstance(fam, Gamma):  # Gamma(4, rate 4), and values far out on both sides
        x0 = torch.distributions.Gamma(torch.tensor(4.0, dtype=dtype), 4.0).sample((n, *fam.event_shape))
        x0[0], x0[1] = 1e-3, 30.0
        return x0
    if isinstance(fam, Beta):
        x0 = torch.rand((n, *fam.event_shape), generator=g, dtype=dtype).clamp(low, 1 - low)
        x0[0], x0[1] = 1e-6, 1 - 1e-6
        return x0
    g0 = -torch.log(torch.rand((n, *fam.event_shape), generator=g, dtype=dtype))
    x0 = (g0 / g0.sum(-1, keepdim=True)).clamp(min=low)
    x0[0, ..., 0] = 1e-6  # a nearly empty component and a nearly full one
    x0[1] = torch.tensor([1e-6, 1e-6, 1.0], dtype=dtype)
    return x0 / x0.sum(-1, keepdim=True)


def mapped(fam, eps) -> int:
    """Noise coordinates that go through an inverse CDF (Wishart: the Bartlett diagonal only)."""
    return eps.shape[0] * fam.p if isinstance(fam, Wishart) else eps.numel()


def within_ulp(x, ref):
    """float32 x within one ulp of ref (1 − x is held no better than x near 1)."""
    ulp = torch.nextafter(ref, torch.full_like(ref, math.inf)) - ref
    return bool(((x - ref).abs() <= ulp).all())


@pytest.fixture
def evaluations(monkeypatch):
    """Elements passed to the CDF per call of the fast maps' iterations (Beta: the series step's
    incomplete beta; Gamma: the Halley step's incomplete gamma), and to the start that is not carried
    (Beta: Boost's float32 inverse; Gamma: the float64 map)."""
    counts, starts = [], []
    real, inverse = BM._lower_cdf, BM.special.betaincinv
    monkeypatch.setattr(BM, "_lower_cdf", lambda aa, bb, x, y: counts.append(x.numel()) or real(aa, bb, x, y))
    monkeypatch.setattr(BM.special, "betaincinv", lambda a, b, p: starts.append(p.size) or inverse(a, b, p))
    halley, plain = GC._halley_step, GC.gamma_log_icdf_normal
    monkeypatch.setattr(GC, "_halley_step", lambda y, *rest: counts.append(y.numel()) or halley(y, *rest))
    for module in (GC, gamma_module):
        monkeypatch.setattr(module, "gamma_log_icdf_normal", lambda xi, a: starts.append(xi.numel()) or plain(xi, a))
    return counts, starts


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("steps", [1000, 60])
def test_chain_matches_the_float64_map_step_by_step(cls, steps, evaluations):
    """Walk the chain as the roll-out does; x equals the float64 map's to one float32 ulp (checked
    at every fifth step and at both ends), and mid-chain one CDF evaluation per element suffices for
    nearly all elements."""
    fam, rho = chain(cls, steps)
    g = torch.Generator().manual_seed(0)
    x0 = data(fam, 24, g)
    counts, starts = evaluations
    xi, state, per_step, fresh = None, None, {}, {}
    for t in range(steps, 0, -1):
        eps = torch.randn((x0.shape[0], *fam.noise_shape), generator=g)
        before = None
        if xi is not None:
            r = rho[t + 1].float()
            eps = r * xi + torch.sqrt(1 - r * r) * eps
            before = (xi, state)
        counts.clear(), starts.clear()
        x, state = fam.from_noise_along(eps, x0, t, before)
        per_step[t], fresh[t] = sum(counts) / mapped(fam, eps), sum(starts)
        assert x.dtype == torch.float32
        if t % 5 == 0 or t <= 30 or t > steps - 30:
            assert within_ulp(x, fam.from_noise(eps.double(), x0.double(), t).float()), t
        assert state[0].dtype == F64 and state[0].shape[0] == eps.shape[0]
        xi = eps
    if steps == 1000:
        middle = [per_step[t] for t in range(25, 990)]  # (measured: Beta ≤ 1.03, 1.001 on average; Dirichlet 1.0; Gamma ≤ 1.08)
        assert max(middle) <= 1.1 and sum(middle) / len(middle) <= 1.01, max(middle)
        assert max(per_step.values()) <= 2.0, per_step  # (the first steps: ν changes by up to 3×)
    assert fresh[steps] == mapped(fam, eps)
    # every later start is carried (Beta's last steps, ν_t > CHAIN_NU_MAX or ν changing 2-4× per
    # step, may start afresh or leave elements to the float64 path)
    later = range(25, 990) if steps == 1000 else range(3, steps)
    assert not any(fresh[t] for t in later), {t: fresh[t] for t in later if fresh[t]}


@pytest.mark.parametrize("cls", ALL)
def test_rollout_carries_starts_without_changing_the_draws(cls, monkeypatch):
    """The roll-out with carried starts gives the plain map's states to one float32 ulp, also when
    examples leave the chain at different steps (the state is kept per example)."""
    fam, rho = chain(cls, 80)
    g = torch.Generator().manual_seed(1)
    n = 16
    x0 = data(fam, n, g, low=0.01)
    keep = torch.stack([torch.randint(1, 81, (n,), generator=g), torch.randint(1, 81, (n,), generator=g)], 1)
    keep[0] = torch.tensor([1, 80])
    carried = rollout(fam, x0, keep, rho=rho, generator=torch.Generator().manual_seed(2))
    monkeypatch.delattr(cls, "from_noise_along")
    plain = rollout(fam, x0, keep, rho=rho, generator=torch.Generator().manual_seed(2))
    assert within_ulp(carried.x, plain.x)
    assert torch.allclose(carried.s, plain.s, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("cls", ALL)
def test_float64_rollout_is_the_exact_map(cls, monkeypatch):
    fam, rho = chain(cls, 30)
    x0 = data(fam, 6, torch.Generator().manual_seed(3), dtype=F64, low=0.01)
    keep = torch.tensor([[1], [5], [12], [30], [2], [1]])
    carried = rollout(fam, x0, keep, rho=rho, generator=torch.Generator().manual_seed(4))
    monkeypatch.delattr(cls, "from_noise_along")
    plain = rollout(fam, x0, keep, rho=rho, generator=torch.Generator().manual_seed(4))
    assert torch.equal(carried.x, plain.x) and torch.equal(carried.s, plain.s)
