"""The Beta family's coupled roll-out with starts carried down the chain (Beta.from_noise_along,
issue #17): the same draws as the plain noise map to float32 precision, about one CDF evaluation per
element and step along the beta-cosine schedule, and the float64 roll-out untouched."""
import pytest
import torch

from mstar_engine.families.beta import Beta
from mstar_engine.numerics import beta_map as BM
from mstar_engine.process.forward import rollout
from mstar_engine.schedules import build_coupling, build_schedule, gaussian_equivalent_snr

F64 = torch.float64


def beta_cosine(steps: int, shape=(3, 4, 4)):
    fam = Beta(shape, nu=build_schedule("beta-cosine", steps)["nu"])
    rho = build_coupling("ddpm", steps, snr=gaussian_equivalent_snr("beta-cosine", steps))
    return fam, rho


def within_ulp(x, ref):
    """float32 x within one ulp of ref (1 − x is held no better than x near 1)."""
    ulp = torch.nextafter(ref, torch.full_like(ref, 2.0)) - ref
    return bool(((x - ref).abs() <= ulp).all())


@pytest.fixture
def evaluations(monkeypatch):
    """Elements passed to the CDF per call of the fast map's iteration."""
    counts = []
    real = BM._lower_cdf
    monkeypatch.setattr(BM, "_lower_cdf", lambda aa, bb, x, y: counts.append(x.numel()) or real(aa, bb, x, y))
    return counts


@pytest.mark.parametrize("steps", [1000, 60])
def test_chain_matches_the_float64_map_step_by_step(steps, evaluations):
    """Walk the chain as the roll-out does; x equals the float64 map's to one float32 ulp (checked
    at every fifth step and at both ends), and mid-chain one CDF evaluation per element suffices for
    nearly all elements."""
    fam, rho = beta_cosine(steps)
    g = torch.Generator().manual_seed(0)
    n = 24
    x0 = torch.rand((n, *fam.event_shape), generator=g).clamp(1e-4, 1 - 1e-4)
    x0[0] = 1e-6
    x0[1] = 1 - 1e-6
    xi, state, per_step = None, None, {}
    for t in range(steps, 0, -1):
        eps = torch.randn(x0.shape, generator=g)
        before = None
        if xi is not None:
            r = rho[t + 1].float()
            eps = r * xi + torch.sqrt(1 - r * r) * eps
            before = (xi, state)
        evaluations.clear()
        x, state = fam.from_noise_along(eps, x0, t, before)
        per_step[t] = sum(evaluations) / x0.numel()
        assert x.dtype == torch.float32
        if t % 5 == 0 or t <= 30 or t > steps - 30:
            assert within_ulp(x, fam.from_noise(eps.double(), x0.double(), t).float()), t
        assert state[0].dtype == F64 and state[0].shape == x0.shape
        xi = eps
    if steps == 1000:
        middle = [per_step[t] for t in range(25, 990)]  # (measured: ≤ 1.03, 1.001 on average)
        assert max(middle) <= 1.1 and sum(middle) / len(middle) <= 1.01, max(middle)
        assert max(per_step.values()) <= 2.0, per_step  # (the first steps: ν changes by up to 3×)


def test_rollout_carries_starts_without_changing_the_draws(monkeypatch):
    """The roll-out with carried starts gives the plain map's states to one float32 ulp, also when
    examples leave the chain at different steps (the state is kept per example)."""
    fam, rho = beta_cosine(80)
    g = torch.Generator().manual_seed(1)
    n = 16
    x0 = torch.rand((n, *fam.event_shape), generator=g).clamp(0.01, 0.99)
    keep = torch.stack([torch.randint(1, 81, (n,), generator=g), torch.randint(1, 81, (n,), generator=g)], 1)
    keep[0] = torch.tensor([1, 80])
    carried = rollout(fam, x0, keep, rho=rho, generator=torch.Generator().manual_seed(2))
    monkeypatch.delattr(Beta, "from_noise_along")
    plain = rollout(fam, x0, keep, rho=rho, generator=torch.Generator().manual_seed(2))
    assert within_ulp(carried.x, plain.x)
    assert torch.allclose(carried.s, plain.s, rtol=1e-5, atol=1e-4)


def test_float64_rollout_is_the_exact_map(monkeypatch):
    fam, rho = beta_cosine(30)
    x0 = torch.rand((6, *fam.event_shape), dtype=F64, generator=torch.Generator().manual_seed(3)).clamp(0.01, 0.99)
    keep = torch.tensor([[1], [5], [12], [30], [2], [1]])
    carried = rollout(fam, x0, keep, rho=rho, generator=torch.Generator().manual_seed(4))
    monkeypatch.delattr(Beta, "from_noise_along")
    plain = rollout(fam, x0, keep, rho=rho, generator=torch.Generator().manual_seed(4))
    assert torch.equal(carried.x, plain.x) and torch.equal(carried.s, plain.s)
