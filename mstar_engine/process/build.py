"""The diffusion process: a family with its schedule, the coupling ρ_t and the training choices.

The ``learned`` coupling needs a tractable kernel KL (:func:`.kernel_kl.learnable`): every built-in
family has one (a closed form, an exact sum, or a bijective noise map and the copula density). A
plug-in family whose inverse noise map draws auxiliary variables falls back to the ``ddpm`` rule,
and the process says so in ``notes``. The spec's ``[process]`` table becomes a process in
:mod:`mstar_engine.app.model`.
"""
from __future__ import annotations

import attrs
from torch import Tensor

from mstar_engine.families import Family
from mstar_engine.process.kernel_kl import learnable
from mstar_engine.schedules import LearnedCoupling, build_coupling


@attrs.define
class DiffusionProcess:
    family: Family
    coupling_kind: str                      # the coupling used (after any fallback)
    fixed_rho: Tensor | None                # ρ_t, length T + 1, of every coupling but the learned one
    learned: LearnedCoupling | None         # the module that makes ρ_t for the learned coupling
    inputs: str                             # "tail", "state" or "tail+state"
    loss: str
    loss_weighting: str
    coupling_lr: float = 1e-3                # learning rate of a learned coupling
    notes: tuple[str, ...] = ()

    def rho(self) -> Tensor:
        """ρ_t as a detached tensor of length T + 1."""
        return (self.learned() if self.learned is not None else self.fixed_rho).detach()


def build_process(family: Family, coupling: str, *, rho: float | None = None, inputs: str, loss: str,
                  loss_weighting: str, coupling_lr: float = 1e-3) -> DiffusionProcess:
    """The process of ``family`` (an instance with its schedule) under the coupling named
    ``coupling`` (``rho``: the constant coupling's value; the ddpm rule and the learned coupling's
    start use the schedule's Gaussian-equivalent SNR, ``family.matched_snr``)."""
    notes = []
    if coupling == "learned" and not learnable(family):
        coupling = "ddpm"
        notes.append(f"the {family.name} family's inverse noise map draws auxiliary variables, so its kernel KL "
                     "is intractable: the learned coupling uses the ddpm rule instead")
    made = build_coupling(coupling, family.steps, snr=family.matched_snr, rho=rho)
    learned = made if coupling == "learned" else None
    return DiffusionProcess(family, coupling, None if learned is not None else made, learned, inputs, loss,
                            loss_weighting, coupling_lr, tuple(notes))
