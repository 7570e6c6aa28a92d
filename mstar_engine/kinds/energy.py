"""The energy-score distributional denoiser as a model kind (``process.kind = "energy-score"``).

De Bortoli et al. (2025): the forward process x_t = (1 − t) x0 + t ε (the linear schedule), a
denoiser x̂0 = net(x_t, t, ξ) that also reads a noise vector ξ ~ N(0, I) so that it can *draw*
from p(x0 | x_t) instead of averaging it, trained with the generalised energy score over m draws
per example (or its kernel / MMD variant; :mod:`.scoring`), and sampled by the paper's
Algorithm 2 (a draw x̂0, then the Gaussian bridge to the next time) with any number of steps. The
draws ξ are made with the training inputs, so runs do not depend on the number of processes.
"""
from __future__ import annotations

import attrs
import torch
from torch import Tensor

from mstar_engine.kinds.base import DataSpaceKind
from mstar_engine.kinds.flow_paths import draw_times, interpolate
from mstar_engine.kinds.scoring import sample_distributional, score


@attrs.define
class EnergyScore(DataSpaceKind):
    family: object                 # the Gaussian family of the spec: event shape, dtype, steps
    score: str = "energy"
    beta: float = 0.1
    lam: float = 1.0
    draws: int = 8
    bandwidth: float = 1.0
    eta: float = 1.0
    time: str = "uniform"
    name = "energy-score"
    noise_input = True

    @property
    def coupling_kind(self) -> str:
        return f"energy-score denoiser ({self.score} score)"

    def draw(self, x0: Tensor, k: int, state, generator: torch.Generator,
             noise: torch.Generator) -> tuple[Tensor, ...]:
        """(t, x_t, ξ): (B, k), (B, k, ...) and the m noise vectors (B, k, m, ...)."""
        b, m = x0.shape[0], self.draws
        t = draw_times(b * k, self.time, noise, device=x0.device, dtype=x0.dtype)
        x0_rep = x0.repeat_interleave(k, 0)
        eps = torch.randn(x0_rep.shape, generator=noise, device=x0.device, dtype=x0.dtype)
        xi = torch.randn((b * k, m, *x0.shape[1:]), generator=noise, device=x0.device, dtype=x0.dtype)
        return tuple(v.unflatten(0, (b, k)) for v in (t, interpolate(x0_rep, eps, t), xi))

    def training_loss(self, net, x0: Tensor, drawn: tuple[Tensor, ...], labels: Tensor | None,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
        t, x_t, xi = drawn
        n, m = x_t.shape[0], self.draws
        lab = labels.repeat_interleave(m, 0) if labels is not None else None
        g = net(x_t.repeat_interleave(m, 0), t.repeat_interleave(m, 0), xi.flatten(0, 1), labels=lab)
        loss = score(self.score, g.unflatten(0, (n, m)), x0, beta=self.beta, lam=self.lam,
                     bandwidth=self.bandwidth).mean()
        return loss, loss

    def sample_batch(self, net, n: int, evaluations: int, rho, generator: torch.Generator,
                     device: torch.device, final: str, frames=None) -> Tensor:
        x1 = torch.randn((n, *self.family.event_shape), generator=generator, device=device, dtype=torch.float64)
        return sample_distributional(lambda x, t, xi: net(x, t, xi), x1, evaluations, generator, self.eta,
                                     callback=(lambda k, t, x, x0_hat: frames(x0_hat)) if frames else None)
