"""The exponential-family diffusion (star-shaped / M-Star) as a model kind (``process.kind =
"exponential-family"``, the default): the process of :mod:`mstar_engine.process` with the
:class:`~.base.Kind` methods.

Training draws K steps t per example and one forward roll-out (x_t, s_t) at them, the network
predicts x̂0 = D_θ(s_t, x_t, t), the loss is the per-step KL term (plus, for a learned coupling, the
kernel KL with x̂0 detached, which trains ρ_t); sampling is the reverse chain on an explicit grid.
"""
from __future__ import annotations

import attrs
import torch
from torch import Tensor

from mstar_engine.process.build import DiffusionProcess
from mstar_engine.process.forward import rollout
from mstar_engine.process.kernel_kl import kernel_kl
from mstar_engine.process.losses import step_loss
from mstar_engine.sampling import sample, step_grid
from mstar_engine.util.devices import to_device


@attrs.define
class ExponentialFamily(DiffusionProcess):
    name = "exponential-family"
    needs_tail_norm = True

    @classmethod
    def of(cls, process: DiffusionProcess) -> ExponentialFamily:
        return cls(**{f.name: getattr(process, f.name) for f in attrs.fields(DiffusionProcess)})

    def block_state(self) -> Tensor:
        return self.rho()

    def draw(self, x0: Tensor, k: int, state: Tensor, generator: torch.Generator,
             noise: torch.Generator) -> tuple[Tensor, ...]:
        keep = to_device(torch.randint(1, self.family.steps + 1, (x0.shape[0], k), generator=generator), x0.device)
        out = rollout(self.family, x0, keep, rho=state, generator=noise)
        return keep, out.x, out.s

    def training_loss(self, net, x0: Tensor, drawn: tuple[Tensor, ...], labels: Tensor | None,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        t, x_t, s_t = drawn
        x0_hat = net(s_t, x_t, t, labels=labels)
        reported = step_loss(self.family, x0, x0_hat, t, self.loss, self.loss_weighting).mean()
        optimised = reported
        if self.learned is not None:
            rho = self.learned()[t]
            optimised = optimised + kernel_kl(self.family, x_t, x0, x0_hat.detach(), t, rho,
                                              generator=generator).mean()
        return reported, optimised

    def sample_batch(self, net, n: int, evaluations: int, rho: Tensor | None, generator: torch.Generator,
                     device: torch.device, final: str, frames=None) -> Tensor:
        grid = step_grid(self.family.steps, evaluations)
        evaluated = set(grid)

        def callback(state: dict) -> None:
            if state["t"] in evaluated:
                frames(state["x0_hat"])
        return sample(net, self.family, n, grid, self.rho() if rho is None else rho, generator=generator,
                      device=device, dtype=torch.float64, final=final, callback=callback if frames else None)
