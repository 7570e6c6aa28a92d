"""From a resolved spec to the engine's objects: the diffusion process, the untrained denoiser, and
the fingerprint of the settings a checkpoint depends on."""
from __future__ import annotations

import attrs
import torch

from mstar_engine.families import get
from mstar_engine.kinds.base import DataSpaceKind
from mstar_engine.kinds.energy import EnergyScore
from mstar_engine.kinds.exponential import ExponentialFamily
from mstar_engine.kinds.flow import FlowMatching
from mstar_engine.kinds.vae import VAEKind
from mstar_engine.networks import build_mlp_denoiser
from mstar_engine.networks.denoiser import build_unet_denoiser
from mstar_engine.networks.field import build_field
from mstar_engine.networks.vae import build_vae
from mstar_engine.process import build
from mstar_engine.process.build import DiffusionProcess
from mstar_engine.plan.compile import flatten
from mstar_engine.process.normalise import TailNorm
from mstar_engine.schedules import gaussian_equivalent_snr
from mstar_engine.schedules.registry import build_for_spec
from mstar_engine.spec.schema import Process, Spec

#: Settings that may change between a run and its resumption without invalidating the checkpoint.
RESUMABLE_CHANGES = ("experiment.description", "experiment.name", "experiment.output_dir", "compare", "train.steps",
                     "train.epochs", "train.checkpoint_every", "train.keep_checkpoints", "train.loss_limit",
                     "train.eval_every", "train.log_every", "train.workers", "sample.", "eval.", "distill.", "devices.")


def build_process(spec: Process, event_shape: tuple[int, ...]):
    """The model kind of a resolved ``[process]`` table (schedule name and inputs no longer "auto"):
    the exponential-family process, or flow matching / the energy-score model / the VAE baseline
    over its (Gaussian) family's data space."""
    if spec.schedule.name == "auto" or spec.inputs == "auto":
        raise ValueError("build_process needs a resolved spec (mstar_engine.spec.resolve.resolve)")
    sched = spec.schedule
    schedule = build_for_spec(sched.name, spec.steps, spec.family, event_shape, reference=sched.reference,
                              values=sched.values, file=sched.file)
    family = get(spec.family)(event_shape, **schedule)
    family.matched_snr = gaussian_equivalent_snr(
        sched.name, spec.steps, family=spec.family, event_shape=event_shape,
        **({"reference": sched.reference} if sched.name == "snr-matched" else {}),
        **({"values": sched.values, "file": sched.file} if sched.name == "custom" else {}))
    if spec.kind == "flow-matching":
        f = spec.flow
        return FlowMatching(family, f.time, f.time_mean, f.time_std, f.solver)
    if spec.kind == "energy-score":
        return EnergyScore(family, **attrs.asdict(spec.energy))
    if spec.kind == "vae":
        return VAEKind(family, **attrs.asdict(spec.vae))
    return ExponentialFamily.of(build.build_process(
        family, spec.coupling.kind, rho=spec.coupling.rho, inputs=spec.inputs, loss=spec.loss,
        loss_weighting=spec.loss_weighting, coupling_lr=spec.coupling.lr))


def build_denoiser(spec: Spec, process: DiffusionProcess, norm: TailNorm | None = None,
                   num_classes: int = 0) -> torch.nn.Module:
    """An untrained denoiser for a resolved spec: the MLP or the U-Net (``network.kind``), class
    conditional when ``num_classes > 0``; for the VAE baseline its own encoder and decoder
    (``[process.vae]``; ``[network]`` does not apply). ``norm`` None: placeholder statistics, to be
    replaced by a checkpoint's buffers."""
    if isinstance(process, VAEKind):
        if num_classes:
            raise ValueError("the VAE baseline is unconditional: set network.class_conditional = false")
        return build_vae(process.family.event_shape, spec.process.vae)
    if isinstance(process, DataSpaceKind):
        return build_field(process.family.event_shape, spec.network, noise_input=process.noise_input,
                           num_classes=num_classes)
    T = process.family.steps
    norm = norm or TailNorm(torch.zeros(T + 1, dtype=torch.float64), torch.ones(T + 1, dtype=torch.float64))
    if spec.network.kind == "unet":
        return build_unet_denoiser(process.family, norm, process.inputs, spec.network, num_classes)
    return build_mlp_denoiser(process.family, norm, process.inputs, spec.network.mlp, spec.network.dropout,
                              num_classes)


def fingerprint(settings) -> dict[str, str]:
    """The settings (an attrs tree such as a spec) that a checkpoint depends on, as dotted keys
    and ``repr`` strings (compared on resume). ``[process.vae]`` counts only for a VAE, so that the
    checkpoints of other kinds written before it existed stay resumable."""
    process = getattr(settings, "process", None)
    skip = RESUMABLE_CHANGES + (() if getattr(process, "kind", "vae") == "vae" else ("process.vae.",))
    return {".".join(p): repr(v) for p, v in flatten(settings)
            if not any(".".join(p).startswith(k) for k in skip)}
