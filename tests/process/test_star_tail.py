"""The star-shaped tail statistic (MATH.md §1, Theorem 2) and the roll-out bookkeeping."""
import math

import pytest
import torch
from scipy import stats

from mstar_engine.families.gaussian import Gaussian
from mstar_engine.process.forward import rollout
from tests.families.fixtures import toy, toy_data

T = 40


def ddpm_snr(steps: int) -> torch.Tensor:
    """SNR^DDPM_t, t = 0..T, of the cosine schedule (index 0 unused)."""
    s = 0.008
    t = torch.arange(steps + 1, dtype=torch.float64)
    f = torch.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = (f / f[0]).clamp(min=1e-12)
    snr = abar / (1 - abar)
    snr[0] = 2 * snr[1]                          # pseudo step: any finite, sharper value
    return snr


@pytest.fixture(scope="module")
def star_gaussian():
    snr_d = ddpm_snr(T)
    snr_ss = snr_d.clone()
    snr_ss[:-1] = snr_d[:-1] - snr_d[1:]        # SNR^SS_t = SNR^D_t − SNR^D_{t+1}, SNR^D_{T+1} = 0
    abar_ss = snr_ss / (1 + snr_ss)
    return Gaussian((2,), mean=abar_ss.sqrt(), var=1 - abar_ss), snr_d


@pytest.mark.parametrize("t", [1, 7, 25, T])
def test_tail_statistic_has_the_ddpm_marginal(star_gaussian, t):
    """Σ_{s≥t} A_s x_s ~ N(SNR^D_t x0, SNR^D_t I), so the rescaled statistic is a DDPM x_t."""
    fam, snr_d = star_gaussian
    n = 20000
    x0 = torch.tensor([[0.8, -1.5]], dtype=torch.float64).expand(n, 2)
    out = rollout(fam, x0, torch.full((n,), t), generator=torch.Generator().manual_seed(t))
    s = out.s[:, 0]
    abar_d = snr_d[t] / (1 + snr_d[t])
    g = (1 - abar_d) / abar_d.sqrt() * s        # Theorem 2 rescaling: G_t ~ N(sqrt(ᾱ) x0, 1 − ᾱ)
    z = (g - abar_d.sqrt() * x0) / (1 - abar_d).sqrt()
    for j in range(2):
        assert stats.kstest(z[:, j].numpy(), "norm").pvalue > 1e-3
    se = 1 / math.sqrt(n)
    assert z.mean(0).abs().max() < 4 * se
    assert (z.var(0) - 1).abs().max() < 4 * math.sqrt(2 / n)


def test_rollout_keeps_requested_steps_and_state(star_gaussian):
    """x at a kept step is that step's draw and s is the running sum of stat() down to it."""
    fam, _ = star_gaussian
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    keep = torch.stack([torch.randint(1, T + 1, (64,)), torch.randint(1, T + 1, (64,))], 1)
    out = rollout(fam, x0, keep, rho=torch.full((T + 1,), 0.6), generator=torch.Generator().manual_seed(1))
    assert out.x.shape == (64, 2, 2) and out.s.shape == (64, 2, 2)
    # the same roll-out keeping every step gives the same values (same random stream per example set)
    full = rollout(fam, x0, torch.arange(1, T + 1).expand(64, T), rho=torch.full((T + 1,), 0.6),
                   generator=torch.Generator().manual_seed(1))
    # s_t − s_{t+1} = A_t x_t along the full roll-out
    a = fam.mean / fam.var
    diffs = full.s[:, :-1] - full.s[:, 1:]
    assert torch.allclose(diffs, a[1:T, None] * full.x[:, :-1], atol=1e-9)
    assert torch.allclose(full.s[:, -1], a[T] * full.x[:, -1])


def test_rollout_rejects_steps_outside_range(star_gaussian):
    fam, _ = star_gaussian
    with pytest.raises(ValueError, match="1..40"):
        rollout(fam, torch.zeros(2, 2, dtype=torch.float64), torch.tensor([0, 3]))


@pytest.mark.parametrize("family_name", ["gamma", "von_mises"])
def test_carried_noise_rollout_has_the_coupled_kernel_law(family_name):
    """For bijective noise maps the roll-out carries ξ instead of inverting x_t; the pair
    (x_t, x_{t-1}) must still have the law of x_t ~ q_t followed by the kernel (coupled_step)."""
    import importlib
    from mstar_engine.process.kernel import coupled_step
    module = importlib.import_module(f"mstar_engine.families.{family_name}")
    fam = toy(next(c for c in vars(module).values() if isinstance(c, type) and getattr(c, "name", None)
                   and c.__module__ == module.__name__))
    n, t = 4000, 5
    g = torch.Generator().manual_seed(11)
    x0 = toy_data(fam, 1, g).expand(n, *fam.event_shape)
    rho = torch.full((fam.steps + 1,), 0.8, dtype=torch.float64)
    out = rollout(fam, x0, torch.stack([torch.full((n,), t), torch.full((n,), t - 1)], 1), rho=rho, generator=g)
    x_t, x_prev = out.x[:, 0], out.x[:, 1]
    direct_prev = coupled_step(fam, x_t, x0, t, 0.8, generator=g)
    flat = lambda v: v.reshape(n, -1)[:, 0].numpy()  # noqa: E731
    assert stats.ks_2samp(flat(x_prev), flat(direct_prev), method="asymp").pvalue > 1e-3
    # the dependence between x_t and x_{t-1} matches too (rank correlation)
    a = stats.spearmanr(flat(x_t), flat(x_prev)).statistic
    b = stats.spearmanr(flat(x_t), flat(direct_prev)).statistic
    assert abs(a - b) < 0.05
