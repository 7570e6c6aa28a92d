"""The VAE baseline (``process.kind = "vae"``): its two ELBO terms against torch.distributions, the
ELBO against the exact log-likelihood of a linear-Gaussian model, the networks' shapes, the kind's
draws and one-call sampler, training on digits and the negative-ELBO anomaly score."""
from __future__ import annotations

import math
import types
from pathlib import Path

import attrs
import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from mstar_engine.app.model import build_denoiser, build_process, fingerprint
from mstar_engine.app.runner import prepare
from mstar_engine.app.runs import Model
from mstar_engine.data.images import load_images
from mstar_engine.kinds.vae import VAEKind
from mstar_engine.metrics.anomaly import anomaly_scores, average_precision
from mstar_engine.networks.vae import (VAE, Decoder, Encoder, build_vae, gaussian_kl, gaussian_nll, latent_shape,
                                       vae_size)
from mstar_engine.plan.compile import model_summary
from mstar_engine.spec import load_spec
from mstar_engine.spec.memory import network_size
from mstar_engine.spec.resolve import resolve
from mstar_engine.train.loop import Settings, train

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "specs" / "digits.toml"
TINY = ["process.kind=vae", "process.vae.channels=8", "process.vae.latent_channels=2", "train.batch_size=32",
        "train.lr=3e-3", "train.warmup_steps=0", "train.ema=0", "train.log_every=50", "process.steps=10"]


def cfg(latent_channels: int = 4, channels: int = 32):
    return types.SimpleNamespace(latent_channels=latent_channels, channels=channels)


# ------------------------------------------------------------------ the two terms of the ELBO

def test_the_kl_term_is_torch_distributions_kl_summed():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64), \
        2 * torch.randn(5, 3, 2, 2, generator=g, dtype=torch.float64)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, rtol=1e-12, atol=1e-12)


def test_the_likelihood_term_is_torch_distributions_log_prob_summed_with_a_scale_per_channel():
    g = torch.Generator().manual_seed(1)
    x, mean = (torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) for _ in range(2))
    log_scale = torch.tensor([-1.0, 0.3, 1.5], dtype=torch.float64).view(3, 1, 1)
    expected = -Normal(mean, log_scale.exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gaussian_nll(x, mean, log_scale), expected, rtol=1e-12, atol=1e-10)


def test_a_built_vae_gives_the_two_terms_of_its_encoder_and_decoder():
    torch.manual_seed(0)
    vae = build_vae((2, 8, 8), cfg(3, 8)).double()
    with torch.no_grad():
        vae.log_scale.copy_(torch.tensor([-0.5, 9.0]))   # the second is clamped to 2
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 2, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(6, 3, 2, 2, generator=g, dtype=torch.float64)
    mu, logvar = vae.encoder(x)
    q = Normal(mu, torch.exp(0.5 * logvar))
    mean = vae.decoder(mu + q.scale * eps)
    sigma = torch.tensor([math.exp(-0.5), math.exp(2.0)], dtype=torch.float64).view(2, 1, 1)
    expected = -Normal(mean, sigma).log_prob(x).flatten(1).sum(1) + kl_divergence(q, Normal(0.0, 1.0)).flatten(1).sum(1)
    got = vae(x, eps)
    assert got.shape == (6,) and torch.allclose(got, expected, rtol=1e-10)
    assert torch.allclose(vae.negative_elbo(x, eps), got)
    nll, kl = vae.terms(x, eps)
    assert torch.allclose(vae(x, eps, 0.25), nll + 0.25 * kl)  # beta weighs the KL term
    z = torch.randn(3, 3, 2, 2, dtype=torch.float64)
    assert torch.equal(vae(z), vae.decoder(z))  # without eps: the decoder's mean


def test_labels_are_refused():
    vae = build_vae((1, 8, 8), cfg(2, 8))
    with pytest.raises(ValueError, match="unconditional"):
        vae(torch.zeros(2, 1, 8, 8), torch.zeros(2, 2, 2, 2), labels=torch.zeros(2, dtype=torch.long))


# ------------------------------------------------- the ELBO is a bound, tight at the exact posterior

class LinearEncoder(nn.Module):
    """q(z | x) = N(A (x − b), diag exp(logvar)) on flattened (1, 2, 2) images, latent (2, 1, 1)."""

    def __init__(self, A, b, logvar):
        super().__init__()
        self.register_buffer("A", A)
        self.register_buffer("b", b)
        self.register_buffer("logvar", logvar)

    def forward(self, x):
        mu = (x.flatten(1) - self.b) @ self.A.T
        return mu.view(-1, 2, 1, 1), self.logvar.view(1, 2, 1, 1).expand(x.shape[0], 2, 1, 1)


class LinearDecoder(nn.Module):
    """The mean W z + b of p(x | z)."""

    def __init__(self, W, b):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("b", b)

    def forward(self, z):
        return (z.flatten(1) @ self.W.T + self.b).view(-1, 1, 2, 2)


def test_the_elbo_bounds_the_exact_log_likelihood_and_is_tight_at_the_exact_posterior():
    """p(z) = N(0, I_2), p(x | z) = N(W z + b, σ² I_4): p(x) = N(b, W Wᵀ + σ² I). W has orthogonal
    columns, so the exact posterior N(S Wᵀ (x − b) / σ², S), S = (I + WᵀW / σ²)⁻¹, is diagonal and
    a VAE encoder can give it: the negative ELBO's mean over ε is then −log p(x); any other encoder
    is worse by KL(q ‖ p(z | x))."""
    dt = torch.float64
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(4, 2, generator=g, dtype=dt))
    W = Q * torch.tensor([1.5, 0.7], dtype=dt)
    b, sigma = torch.tensor([0.2, -0.1, 0.4, 0.0], dtype=dt), 0.6
    S = torch.linalg.inv(torch.eye(2, dtype=dt) + W.T @ W / sigma**2)
    assert torch.allclose(S, torch.diag(torch.diagonal(S)), atol=1e-12)
    x = torch.tensor([[0.9, -0.8, 1.1, 0.3]], dtype=dt)
    exact = -MultivariateNormal(b, W @ W.T + sigma**2 * torch.eye(4, dtype=dt)).log_prob(x)

    @torch.no_grad()
    def mean_bound(A, logvar, n=40_000):
        vae = VAE(LinearEncoder(A, b, logvar), LinearDecoder(W, b), 1).double()
        vae.log_scale.fill_(math.log(sigma))
        eps = torch.randn(n, 2, 1, 1, generator=torch.Generator().manual_seed(4), dtype=dt)
        values = vae(x.view(1, 1, 2, 2).expand(n, 1, 2, 2), eps)
        return values.mean(), values.std() / math.sqrt(n)

    A_exact, logvar_exact = S @ W.T / sigma**2, torch.log(torch.diagonal(S))
    got, se = mean_bound(A_exact, logvar_exact)
    assert abs(float(got - exact)) < 4 * float(se) + 1e-9, (float(got), float(exact), float(se))
    # another encoder: worse by KL(q ‖ posterior), itself a closed form
    A_off, logvar_off = 0.6 * A_exact, logvar_exact + 0.8
    mu_post, mu_off = A_exact @ (x[0] - b), A_off @ (x[0] - b)
    gap = kl_divergence(Normal(mu_off, torch.exp(0.5 * logvar_off)), Normal(mu_post, torch.diagonal(S).sqrt())).sum()
    worse, se = mean_bound(A_off, logvar_off)
    assert float(gap) > 0.1
    assert abs(float(worse - (exact + gap))) < 4 * float(se) + 1e-9
    assert float(worse) > float(exact) + 0.1


# --------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (1, 32, 32), (3, 32, 32)])
def test_encoder_and_decoder_shapes(shape):
    c, size = shape[0], shape[1]
    encoder, decoder = Encoder(c, 3, 8), Decoder(c, 3, 8)
    x = torch.randn(2, *shape)
    mu, logvar = encoder(x)
    assert mu.shape == logvar.shape == (2, *latent_shape(shape, 3)) == (2, 3, size // 4, size // 4)
    assert decoder(mu).shape == x.shape
    kind = VAEKind(types.SimpleNamespace(event_shape=shape, steps=10), latent_channels=3)
    assert kind.latent_shape == (3, size // 4, size // 4)
    assert sum(p.numel() for p in build_vae(shape, cfg(3, 8)).parameters()) == vae_size(shape, 3, 8)[0]


@pytest.mark.parametrize("shape", [(64,), (1, 8, 12), (1, 10, 10), (2, 2, 2)])
def test_other_shapes_are_refused_with_what_is_needed(shape):
    with pytest.raises(ValueError, match=r"square images \(C, H, W\) with H = W a multiple of 4"):
        build_vae(shape, cfg())


# ------------------------------------------------------------------------- the kind

def kind_of(shape=(1, 8, 8), **kw) -> VAEKind:
    return VAEKind(types.SimpleNamespace(event_shape=shape, steps=10), **kw)


def test_the_draw_is_latent_noise_from_the_noise_generator():
    kind = kind_of(latent_channels=2)
    x0 = torch.zeros(5, 1, 8, 8)
    (eps,) = kind.draw(x0, 3, None, torch.Generator().manual_seed(0), torch.Generator().manual_seed(7))
    assert eps.shape == (5, 3, 2, 2, 2)
    expected = torch.randn((15, 2, 2, 2), generator=torch.Generator().manual_seed(7))
    assert torch.equal(eps.flatten(0, 1), expected)  # from `noise`, not from `generator`


def test_sampling_makes_one_network_call_whatever_the_evaluations():
    kind = kind_of(latent_channels=2)
    vae = build_vae((1, 8, 8), cfg(2, 8))
    calls, frames = [], []

    def net(*inputs):
        calls.append(len(inputs))
        return vae(*inputs)
    for evaluations in (1, 4, 100):
        x = kind.sample_batch(net, 6, evaluations, None, torch.Generator().manual_seed(0), torch.device("cpu"), "draw",
                              frames=frames.append)
        assert x.shape == (6, 1, 8, 8) and x.dtype == torch.float64
    assert calls == [1, 1, 1] and len(frames) == 3 and VAEKind.evaluations == 1
    z = torch.randn((6, 2, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(x, vae(z).double())


def test_the_training_loss_is_the_mean_negative_elbo_and_beta_weighs_the_kl():
    torch.manual_seed(0)
    vae = build_vae((1, 8, 8), cfg(2, 8))
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    eps = torch.randn(4, 2, 2, 2)
    reported, optimised = kind_of(latent_channels=2).training_loss(vae, x0, (eps,), None, torch.Generator())
    assert reported is optimised and torch.allclose(reported, vae.negative_elbo(x0, eps).mean())
    nll, kl = vae.terms(x0, eps)
    loss, _ = kind_of(latent_channels=2, beta=0.5).training_loss(vae, x0, (eps,), None, torch.Generator())
    assert torch.allclose(loss, (nll + 0.5 * kl).mean())


def test_the_spec_builds_the_kind_and_its_network_and_the_memory_estimate_counts_it():
    spec = resolve(load_spec(DIGITS, ["process.kind=vae", "process.vae.latent_channels=3",
                                      "process.vae.channels=16", "process.vae.beta=0.5"]).spec)
    kind = build_process(spec.process, (1, 8, 8))
    assert isinstance(kind, VAEKind) and (kind.latent_channels, kind.channels, kind.beta) == (3, 16, 0.5)
    assert kind.latent_shape == (3, 2, 2) and kind.score_draws == 8
    with torch.device("meta"):
        net = build_denoiser(spec, kind)
    assert isinstance(net, VAE) and net.backbone is net and net.num_classes == 0
    assert network_size(spec).parameters == sum(p.numel() for p in net.parameters())
    assert model_summary(spec.process, (1, 8, 8)) == "VAE baseline (latent 3×2×2, KL weight beta 0.5)"
    # [process.vae] is part of a VAE checkpoint's settings only
    assert "process.vae.channels" in fingerprint(spec)
    other = resolve(load_spec(DIGITS, []).spec)
    assert not any(k.startswith("process.vae.") for k in fingerprint(other))


# ----------------------------------------------------- training and the anomaly score on digits

def test_training_lowers_the_negative_elbo_and_scores_the_unseen_digit_higher(tmp_path, one_thread):
    """Digits without the 1s: 200 steps lower the held-out negative ELBO, and the held-out 1s
    score higher than the other held-out digits (AUPRC well above the 1s' share)."""
    spec = resolve(load_spec(DIGITS, [*TINY, "data.classes=[0, 2, 3, 4, 5, 6, 7, 8, 9]"]).spec)
    prepared = prepare(spec, log=lambda _: None)
    kind, held_out = prepared.process, prepared.data.held_out
    before = anomaly_scores(Model(kind, prepared.denoiser), held_out, batch_size=64, seed=5)
    ema = train(kind, prepared.denoiser, prepared.source, Settings.of(spec.train), 200, tmp_path, seed=0,
                log=lambda _: None)
    model = Model(kind, ema.eval())
    after = anomaly_scores(model, held_out, batch_size=64, seed=5)
    assert after.shape == before.shape == (held_out.shape[0],) and after.dtype == torch.float64
    assert float(after.mean()) < 0.7 * float(before.mean())
    everything = load_images(attrs.evolve(spec.data, classes=None), spec.experiment.seed)
    scores = anomaly_scores(model, everything.held_out, batch_size=64, seed=5)
    ones = (everything.held_out_labels == 1).numpy()
    assert average_precision(scores.numpy(), ones) > 2 * ones.mean()


def test_the_anomaly_score_is_the_negative_elbo_averaged_over_seeded_draws():
    torch.manual_seed(0)
    kind = kind_of(latent_channels=2, score_draws=3)
    vae = build_vae((1, 8, 8), cfg(2, 8)).eval()
    model = Model(kind, vae)
    x = torch.rand(10, 1, 8, 8) * 2 - 1
    scores = anomaly_scores(model, x, batch_size=16, seed=9)
    assert scores.shape == (10,) and scores.dtype == torch.float64 and torch.isfinite(scores).all()
    assert torch.equal(scores, anomaly_scores(model, x, batch_size=16, seed=9))
    assert not torch.equal(scores, anomaly_scores(model, x, batch_size=16, seed=10))
    eps = torch.randn((30, 2, 2, 2), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = vae.negative_elbo(x.repeat_interleave(3, 0), eps).double().view(10, 3).mean(1)
    assert torch.allclose(scores, expected)
