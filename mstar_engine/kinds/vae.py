"""The VAE baseline as a model kind (``process.kind = "vae"``).

Kingma & Welling (2014): a convolutional encoder q(z | x) and decoder p(x | z) with a spatial
latent (:mod:`mstar_engine.networks.vae`), trained by minimising the negative ELBO, in nats per
example. It is the baseline of the anomaly-detection table: an example's score is its negative
ELBO (:meth:`VAEKind.anomaly_scores`), averaged over ``score_draws`` latent draws.

It runs through the same training loop as every kind: the draw is the latent noise ε of the
reparametrisation z = mu + σ ε, ``train.t_per_rollout`` draws per example (a Monte Carlo average
of the ELBO), made from the training's noise generator so that a resumed run is exact. With
``beta`` ≠ 1 (β-VAE) the KL term is weighted by beta in the objective, and the loss in the log is
that optimised objective (not the ELBO); the anomaly score is always the true negative ELBO.

Sampling draws z ~ N(0, I) and returns the decoder's mean: ONE network evaluation, whatever number
of evaluations it is asked for (:attr:`VAEKind.evaluations`; ``final`` is ignored too).
"""
from __future__ import annotations

import attrs
import torch
from torch import Tensor

from mstar_engine.kinds.base import DataSpaceKind
from mstar_engine.networks.vae import latent_shape


@attrs.define
class VAEKind(DataSpaceKind):
    family: object                 # the Gaussian family of the spec: event shape (C, H, W), dtype, steps
    latent_channels: int = 4
    channels: int = 32
    beta: float = 1.0
    score_draws: int = 8
    name = "vae"
    inputs = "data"
    #: Network evaluations of one sample, whatever a sampler asks for: one decoder call.
    evaluations = 1

    @property
    def coupling_kind(self) -> str:
        return "VAE (negative ELBO)" if self.beta == 1 else f"beta-VAE (beta {self.beta:g})"

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(latent_channels, H/4, W/4) for images (C, H, W)."""
        return latent_shape(tuple(self.family.event_shape), self.latent_channels)

    def draw(self, x0: Tensor, k: int, state, generator: torch.Generator,
             noise: torch.Generator) -> tuple[Tensor, ...]:
        """(ε,): ``k`` latent draws per example, (B, k, *latent_shape), from ``noise``."""
        b = x0.shape[0]
        eps = torch.randn((b * k, *self.latent_shape), generator=noise, device=x0.device, dtype=x0.dtype)
        return (eps.unflatten(0, (b, k)),)

    def training_loss(self, net, x0: Tensor, drawn: tuple[Tensor, ...], labels: Tensor | None,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The mean over the batch of −log p(x | z) + beta · KL (the negative ELBO when beta = 1),
        in nats per example; reported and optimised alike."""
        (eps,) = drawn
        loss = net(x0, eps, self.beta, labels=labels).mean()  # the VAE refuses labels
        return loss, loss

    def sample_batch(self, net, n: int, evaluations: int, rho, generator: torch.Generator,
                     device: torch.device, final: str, frames=None) -> Tensor:
        """``n`` decoded means of z ~ N(0, I) (float64): one call of ``net(z)`` whatever
        ``evaluations`` and ``final`` say; ``frames`` sees that one picture."""
        z = torch.randn((n, *self.latent_shape), generator=generator, device=device, dtype=torch.float64)
        x = net(z).to(torch.float64)
        if frames is not None:
            frames(x)
        return x

    @torch.no_grad()
    def anomaly_scores(self, denoiser, x: Tensor, *, draws: int, batch_size: int,
                       generator: torch.Generator) -> Tensor:
        """Per-example negative ELBO of ``x`` (N, C, H, W) in nats, averaged over ``draws`` latent
        draws from ``generator`` (on the network's device): (N,) float64 on the CPU. Always the
        true ELBO (beta = 1), whatever beta trained the model. Higher = more anomalous."""
        device = next(denoiser.parameters()).device
        out = []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device=device, dtype=torch.float32)  # as in training
            b = xb.shape[0]
            eps = torch.randn((b * draws, *self.latent_shape), generator=generator, device=device, dtype=xb.dtype)
            scores = denoiser(xb.repeat_interleave(draws, 0), eps)
            out.append(scores.to(torch.float64).view(b, draws).mean(1).cpu())
        return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)
