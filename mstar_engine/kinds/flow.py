"""Flow matching / rectified flow as a model kind (``process.kind = "flow-matching"``).

Lipman et al. (2023), Liu et al. (2023): the path x_t = (1 − t) x0 + t ε between data and
N(0, I) noise, the network regresses the velocity ε − x0 at times drawn uniformly or logit-normally
(Esser et al. 2024), and samples integrate dx/dt = v(x, t) from t = 1 to 0 with Euler or Heun
steps, any number of network evaluations (:mod:`.flow_paths`). A rectified (reflowed) model is the
same kind trained on its own ODE couplings instead of independent noise: the draw then takes ε
from the pair (``distill.method = "reflow"``).
"""
from __future__ import annotations

import attrs
import torch
from torch import Tensor

from mstar_engine.kinds.base import DataSpaceKind
from mstar_engine.kinds.flow_paths import draw_times, interpolate, ode_sample, velocity_target


@attrs.define
class FlowMatching(DataSpaceKind):
    family: object                 # the Gaussian family of the spec: event shape, dtype, steps
    time: str = "uniform"
    time_mean: float = 0.0
    time_std: float = 1.0
    solver: str = "euler"
    paired: bool = False           # trained on (x0, ε) pairs (B, 2, ...): reflow
    name = "flow-matching"

    @property
    def coupling_kind(self) -> str:
        return f"flow matching ({self.solver})"

    def draw(self, x0: Tensor, k: int, state, generator: torch.Generator,
             noise: torch.Generator) -> tuple[Tensor, ...]:
        """(t, x_t, ε), each (B, k, ...); ε is the pair's noise when x0 holds reflow pairs."""
        x0, paired = self._split(x0)
        b = x0.shape[0]
        t = draw_times(b * k, self.time, noise, mean=self.time_mean, std=self.time_std, device=x0.device,
                       dtype=x0.dtype)
        x0_rep = x0.repeat_interleave(k, 0)
        eps = paired.repeat_interleave(k, 0) if paired is not None else \
            torch.randn(x0_rep.shape, generator=noise, device=x0.device, dtype=x0.dtype)
        x_t = interpolate(x0_rep, eps, t)
        return tuple(v.unflatten(0, (b, k)) for v in (t, x_t, eps))

    def training_loss(self, net, x0: Tensor, drawn: tuple[Tensor, ...], labels: Tensor | None,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
        t, x_t, eps = drawn
        x0, _ = self._split(x0)
        v = net(x_t, t, labels=labels)
        loss = (v - velocity_target(x0, eps)).pow(2).flatten(1).sum(1).mean()
        return loss, loss

    def _split(self, x0: Tensor) -> tuple[Tensor, Tensor | None]:
        """Data and the paired noise of reflow's (x0, ε) pairs, stacked as (B, 2, ...); plain data
        and None otherwise."""
        return (x0[:, 0], x0[:, 1]) if self.paired else (x0, None)

    def sample_batch(self, net, n: int, evaluations: int, rho, generator: torch.Generator,
                     device: torch.device, final: str, frames=None) -> Tensor:
        x1 = torch.randn((n, *self.family.event_shape), generator=generator, device=device, dtype=torch.float64)
        return ode_sample(lambda x, t: net(x, t), x1, evaluations, self.solver,
                          callback=(lambda x, t: frames(x)) if frames else None)
