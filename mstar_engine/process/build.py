"""Build the diffusion process of a resolved spec: family + schedule + coupling.

The ``learned`` coupling needs a tractable kernel KL (:func:`.kernel_kl.learnable`); for families
whose inverse noise map draws auxiliary variables it falls back to the ``ddpm`` rule and the
process says so in ``notes``.
"""
from __future__ import annotations

import attrs
from torch import Tensor

from mstar_engine.families import Family, get
from mstar_engine.process.kernel_kl import learnable
from mstar_engine.schedules import LearnedCoupling, build_coupling, gaussian_equivalent_snr
from mstar_engine.schedules.registry import build_for_spec
from mstar_engine.spec.schema import Process as ProcessSpec


@attrs.define
class DiffusionProcess:
    family: Family
    coupling: Tensor | LearnedCoupling      # ρ_t, length T + 1 (or the module that makes it)
    coupling_kind: str                      # what is used (after any fallback)
    inputs: str                             # "tail", "state" or "tail+state"
    loss: str
    loss_weighting: str
    coupling_lr: float = 1e-3                # learning rate of a learned coupling
    notes: tuple[str, ...] = ()

    def rho(self) -> Tensor:
        """ρ_t as a detached tensor of length T + 1."""
        return (self.coupling() if isinstance(self.coupling, LearnedCoupling) else self.coupling).detach()


def build_process(spec: ProcessSpec, event_shape: tuple[int, ...]) -> DiffusionProcess:
    """``spec`` is a resolved ``[process]`` table (schedule name and inputs no longer "auto")."""
    if spec.schedule.name == "auto" or spec.inputs == "auto":
        raise ValueError("build_process needs a resolved spec (mstar_engine.spec.resolve.resolve)")
    family_cls = get(spec.family)
    schedule = build_for_spec(spec.schedule.name, spec.steps, spec.family, event_shape,
                              reference=spec.schedule.reference, values=spec.schedule.values,
                              file=spec.schedule.file)
    family = family_cls(event_shape, **schedule)
    snr = gaussian_equivalent_snr(spec.schedule.name, spec.steps, family=spec.family, event_shape=event_shape,
                                  **({"reference": spec.schedule.reference} if spec.schedule.name == "snr-matched"
                                     else {}), **({"values": spec.schedule.values, "file": spec.schedule.file}
                                                  if spec.schedule.name == "custom" else {}))
    family.matched_snr = snr
    kind, notes = spec.coupling.kind, []
    if kind == "learned" and not learnable(family):
        kind = "ddpm"
        notes.append(f"the {family.name} family's inverse noise map draws auxiliary variables, so its kernel KL "
                     "is intractable: the learned coupling uses the ddpm rule instead")
    coupling = build_coupling(kind, spec.steps, snr=snr, rho=spec.coupling.rho)
    return DiffusionProcess(family, coupling, kind, spec.inputs, spec.loss, spec.loss_weighting,
                            spec.coupling.lr, tuple(notes))

