"""Tail normalisation: standardised per step, identical after a checkpoint round trip, and the
family-specific variants (vMF direction + log-norm; categorical softmax = the posterior)."""
import torch

from mstar_engine.families.categorical import Categorical
from mstar_engine.families.gamma import Gamma
from mstar_engine.families.vmf import VonMisesFisher
from mstar_engine.process.forward import rollout
from mstar_engine.process.normalise import TailNorm
from tests.families.fixtures import toy, toy_data


def test_standardised_per_step_on_fresh_rollouts():
    fam = toy(Gamma)
    g = torch.Generator().manual_seed(0)
    norm = TailNorm.estimate(fam, [toy_data(fam, 2000, g) for _ in range(2)], generator=g)
    T = fam.steps
    out = rollout(fam, toy_data(fam, 4000, g), torch.arange(1, T + 1).expand(4000, T), generator=g)
    z = norm(fam, out.s.flatten(0, 1), torch.arange(1, T + 1).repeat(4000)).reshape(4000, T, -1)
    assert z.mean((0, 2)).abs().max() < 0.05
    assert (z.std((0, 2)) - 1).abs().max() < 0.05


def test_state_dict_round_trip_is_exact():
    fam = toy(Gamma)
    g = torch.Generator().manual_seed(1)
    norm = TailNorm.estimate(fam, [toy_data(fam, 256, g)], generator=g)
    again = TailNorm.from_state_dict(norm.state_dict())
    s, t = torch.randn(8, 2, dtype=torch.float64), torch.randint(1, fam.steps + 1, (8,))
    assert torch.equal(norm(fam, s, t), again(fam, s, t))


def test_vmf_input_is_direction_and_log_norm():
    fam = toy(VonMisesFisher)
    g = torch.Generator().manual_seed(2)
    norm = TailNorm.estimate(fam, [toy_data(fam, 512, g)], generator=g)
    s = torch.randn(16, fam.event_shape[0], dtype=torch.float64) * 5
    t = torch.randint(1, fam.steps + 1, (16,))
    z = norm(fam, s, t)
    assert z.shape == (16, fam.event_shape[0] + 1) == (16, *fam.norm_shape)
    assert torch.allclose(z[:, :-1].norm(dim=1), torch.ones(16, dtype=torch.float64))
    expected = (torch.log(s.norm(dim=1)) - norm.mean[t]) / norm.std[t]
    assert torch.allclose(z[:, -1], expected)


def test_categorical_softmax_is_the_brute_force_posterior():
    """softmax(s_t) = q(x0 = k | x_{t:T}) under a uniform prior over the K one-hot values."""
    fam = toy(Categorical)
    g = torch.Generator().manual_seed(3)
    x0 = toy_data(fam, 64, g)
    t = 3
    draws = [fam.sample(x0, s, g) for s in range(t, fam.steps + 1)]
    s_t = sum(fam.stat(x, s) for x, s in zip(draws, range(t, fam.steps + 1)))
    norm = TailNorm(torch.zeros(fam.steps + 1), torch.ones(fam.steps + 1))
    got = norm(fam, s_t, torch.full((64,), t))
    length, k = fam.event_shape
    # brute force: per position, log q_s(x_s | x0 = e_j) from log_prob of single-position events
    eye = torch.eye(k, dtype=x0.dtype)
    logits = torch.zeros(64, length, k, dtype=torch.float64)
    for j in range(k):
        cand = eye[j].expand(64, length, k)
        for x, s in zip(draws, range(t, fam.steps + 1)):
            for pos in range(length):
                single = Categorical((1, k), bar_beta=fam.bar_beta)
                logits[:, pos, j] += single.log_prob(x[:, pos:pos + 1], cand[:, pos:pos + 1], s)
    assert torch.allclose(got, torch.softmax(logits, -1), atol=1e-9)
