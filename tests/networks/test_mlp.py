"""The MLP denoiser: shapes and domain for every family and input mode, gradients, class
conditioning, the published parameter count, determinism, sinusoidal time, and a tiny overfit."""
import math

import pytest
import torch

from mstar_engine.families import REGISTRY
from mstar_engine.families.gaussian import Gaussian
from mstar_engine.networks import (
    MLP,
    Denoiser,
    build_mlp_denoiser,
    drop_labels,
    input_features,
    mlp_parameter_count,
    scaled_time,
    sinusoidal_embedding,
)
from mstar_engine.process.forward import rollout
from mstar_engine.process.normalise import TailNorm
from mstar_engine.sampling import sample, step_grid
from tests.families.fixtures import toy, toy_data

SMALL = {"hidden": 16, "blocks": 2, "time_dim": 8}
FAMILIES = sorted(REGISTRY)
INPUTS = ("tail", "state", "tail+state")


def _setup(name: str, n: int = 6, seed: int = 0):
    """Toy family, its TailNorm from 64 examples, and a batch (x0, x_t, s_t, t) at random steps."""
    gen = torch.Generator().manual_seed(seed)
    fam = toy(REGISTRY[name])
    norm = TailNorm.estimate(fam, [toy_data(fam, 64, gen)], generator=gen)
    x0 = toy_data(fam, n, gen)
    t = torch.randint(1, fam.steps + 1, (n,), generator=gen)
    out = rollout(fam, x0, t, generator=gen)
    return fam, norm, x0, out.x[:, 0], out.s[:, 0], t


@pytest.fixture(scope="module")
def setups():
    return {name: _setup(name) for name in FAMILIES}


@pytest.mark.parametrize("inputs", INPUTS)
@pytest.mark.parametrize("name", FAMILIES)
def test_shapes_and_domain(setups, name, inputs):
    fam, norm, x0, x_t, s_t, t = setups[name]
    torch.manual_seed(0)
    den = build_mlp_denoiser(fam, norm, inputs, SMALL)
    expect = (math.prod(fam.norm_shape) if "tail" in inputs else 0) + \
             (math.prod(fam.event_shape) if "state" in inputs else 0)
    assert den.backbone.in_features == expect == input_features(fam, inputs)
    assert den.backbone.out_features == math.prod(fam.raw_shape)
    assert den.raw(s_t, x_t, t).shape == (x0.shape[0], *fam.raw_shape)
    with torch.no_grad():
        x0_hat = den(s_t, x_t, t)
    assert x0_hat.shape == x0.shape
    assert x0_hat.dtype == x_t.dtype
    assert torch.isfinite(x0_hat).all()
    fam.check_domain(x0_hat, "prediction")
    # an int step (broadcast to the batch) and the pseudo step 0 are accepted
    fam.check_domain(den(s_t, x_t, 3).detach(), "prediction")
    fam.check_domain(den(s_t, x_t, torch.zeros_like(t)).detach(), "prediction")


@pytest.mark.parametrize("name", ["gaussian", "vmf", "wishart", "categorical"])
def test_gradients_reach_every_parameter(setups, name):
    fam, norm, x0, x_t, s_t, t = setups[name]
    torch.manual_seed(1)
    den = build_mlp_denoiser(fam, norm, "tail+state", SMALL, dropout=0.1, num_classes=3)
    den.train()
    labels = torch.tensor([0, 1, 2, 3, 0, 1])  # 3 = "no label"
    loss = fam.kl(x0, den(s_t, x_t, t, labels), torch.clamp(t - 1, min=0)).mean()
    loss.backward()
    for pname, p in den.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_class_conditioning_and_null_label(setups):
    fam, norm, x0, x_t, s_t, t = setups["gaussian"]
    torch.manual_seed(2)
    den = build_mlp_denoiser(fam, norm, "tail", SMALL, num_classes=4).eval()
    assert den.backbone.null_label == 4
    n = x0.shape[0]
    with torch.no_grad():
        a = den(s_t, x_t, t, torch.zeros(n, dtype=torch.long))
        b = den(s_t, x_t, t, torch.ones(n, dtype=torch.long))
        null = den(s_t, x_t, t, torch.full((n,), 4))
        none = den(s_t, x_t, t)
        neg = den(s_t, x_t, t, torch.full((n,), -1))
        mixed = den(s_t, x_t, t, torch.tensor([0, 4, 0, 4, 0, 4]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, null)
    torch.testing.assert_close(none, null)
    torch.testing.assert_close(neg, null)
    torch.testing.assert_close(mixed[0::2], a[0::2])
    torch.testing.assert_close(mixed[1::2], null[1::2])
    # the "no label" row starts at zero: the unconditional model is the plain MLP at init
    plain = Denoiser(fam, norm, "tail", MLP(3, 3, **SMALL))
    plain.backbone.load_state_dict({k: v for k, v in den.backbone.state_dict().items()
                                    if not k.startswith("label_embedding")})
    with torch.no_grad():
        torch.testing.assert_close(plain(s_t, x_t, t), null)
    with pytest.raises(ValueError, match="labels"):
        den(s_t, x_t, t, torch.full((n,), 5))
    with pytest.raises(ValueError, match="without classes"):
        plain(s_t, x_t, t, torch.zeros(n, dtype=torch.long))


def test_drop_labels():
    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(4000, dtype=torch.long)
    dropped = drop_labels(labels, 0.25, 7, gen)
    frac = (dropped == 7).double().mean().item()
    assert 0.22 < frac < 0.28
    assert set(dropped.unique().tolist()) <= {0, 7}
    assert drop_labels(labels, 0.0, 7) is labels


def test_published_parameter_count():
    # Dirichlet on the 3-simplex, tail input: 3 in, 3 out; hidden 512, 3 blocks, time 32.
    fam = toy(REGISTRY["dirichlet"])
    norm = TailNorm(torch.zeros(fam.steps + 1), torch.ones(fam.steps + 1))
    den = build_mlp_denoiser(fam, norm, "tail", {"hidden": 512, "blocks": 3, "time_dim": 32})
    by_hand = (3 + 32) * 512 + 512 + 3 * (512 * 512 + 512) + 512 * 3 + 3
    assert by_hand == 807_939
    assert sum(p.numel() for p in den.parameters()) == by_hand == mlp_parameter_count(3, 3)
    # defaults are the published sizes; class conditioning adds (classes + 1) × hidden
    assert sum(p.numel() for p in MLP(3, 3).parameters()) == by_hand
    assert sum(p.numel() for p in MLP(3, 3, num_classes=10).parameters()) == by_hand + 11 * 512
    # the tail-normalisation statistics travel in the state dict, not as parameters
    state = den.state_dict()
    assert "norm_mean" in state and "norm_std" in state


def test_determinism_under_seed(setups):
    fam, norm, x0, x_t, s_t, t = setups["beta"]
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        den = build_mlp_denoiser(fam, norm, "tail+state", SMALL, dropout=0.2)
        den.train()
        outs.append(den(s_t, x_t, t).detach())  # dropout draws are seeded too
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.manual_seed(124)
    other = build_mlp_denoiser(fam, norm, "tail+state", SMALL)
    assert not torch.allclose(other(s_t, x_t, t).detach(), outs[0])


def test_state_dict_round_trip(setups):
    fam, norm, x0, x_t, s_t, t = setups["vmf"]
    torch.manual_seed(3)
    den = build_mlp_denoiser(fam, norm, "tail+state", SMALL).eval()
    other_norm = TailNorm(torch.zeros_like(norm.mean), torch.ones_like(norm.std))
    torch.manual_seed(4)
    fresh = build_mlp_denoiser(fam, other_norm, "tail+state", SMALL).eval()
    fresh.load_state_dict(den.state_dict())
    torch.testing.assert_close(fresh.norm.mean, norm.mean)
    with torch.no_grad():
        torch.testing.assert_close(fresh(s_t, x_t, t), den(s_t, x_t, t))


def test_input_validation(setups):
    fam, norm, *_ = setups["gaussian"]
    with pytest.raises(ValueError, match="resolved"):
        build_mlp_denoiser(fam, norm, "auto", SMALL)
    with pytest.raises(ValueError, match="TailNorm"):
        build_mlp_denoiser(fam, None, "tail", SMALL)
    build_mlp_denoiser(fam, None, "state", SMALL)  # the state alone needs no normalisation


def test_time_embedding():
    t = torch.tensor([0, 4, 8])
    torch.testing.assert_close(scaled_time(t, 8), torch.tensor([0.0, 500.0, 1000.0]))
    emb = sinusoidal_embedding(scaled_time(t, 8), 32)
    assert emb.shape == (3, 32)
    torch.testing.assert_close(emb, sinusoidal_embedding(t, 32, steps=8))
    # t = 0: sin part 0, cos part 1; highest frequency 1 at index 0, lowest 1/max_period at half − 1
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    torch.testing.assert_close(emb[1, 0], torch.sin(torch.tensor(500.0)))
    torch.testing.assert_close(emb[2, 15], torch.sin(torch.tensor(1000.0 / 10000.0)))
    assert sinusoidal_embedding(t.float(), 7).shape == (3, 7)
    assert (sinusoidal_embedding(t.float(), 7)[:, -1] == 0).all()
    assert torch.unique(emb, dim=0).shape[0] == 3


def test_satisfies_sampling_protocol(setups):
    fam, norm, *_ = setups["gaussian"]
    torch.manual_seed(5)
    den = build_mlp_denoiser(fam, norm, "tail+state", SMALL).eval()
    gen = torch.Generator().manual_seed(0)
    out = sample(den, fam, 5, step_grid(fam.steps, 4), generator=gen, dtype=torch.float64)
    assert out.shape == (5, *fam.event_shape)
    assert torch.isfinite(out).all()


def test_overfits_64_gaussian_examples():
    """200 Adam steps on 64 fixed (s_t, x_t, t, x0) examples reduce the x0-MSE by more than 10×."""
    gen = torch.Generator().manual_seed(0)
    fam = toy(Gaussian)
    norm = TailNorm.estimate(fam, [toy_data(fam, 64, gen)], generator=gen)
    x0 = toy_data(fam, 64, gen)
    t = torch.randint(1, fam.steps + 1, (64,), generator=gen)
    out = rollout(fam, x0, t, generator=gen)
    x_t, s_t = out.x[:, 0], out.s[:, 0]
    torch.manual_seed(0)
    den = build_mlp_denoiser(fam, norm, "tail+state", {"hidden": 128, "blocks": 2, "time_dim": 16})
    opt = torch.optim.Adam(den.parameters(), lr=3e-3)

    def mse():
        return (den(s_t, x_t, t) - x0).pow(2).mean()

    with torch.no_grad():
        before = mse().item()
    for _ in range(200):
        opt.zero_grad()
        loss = mse()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = mse().item()
    assert after < before / 10, (before, after)
