"""Replace every ``auto`` and unset-by-default value of a spec by what it means for this spec.

Pure and deterministic: the same spec resolves the same way on every machine (devices are
resolved separately by the plan, which may look at the hardware).
"""
from __future__ import annotations

import attrs

from mstar_engine.data.catalog import DATASETS
from mstar_engine.distill.stages import halvings, landing_exists, sampling_coupling
from mstar_engine.families import get
from mstar_engine.spec.schema import Spec


def resolve(spec: Spec) -> Spec:
    proc, info = spec.process, DATASETS[spec.data.name]
    schedule = proc.schedule
    if schedule.name == "auto":
        schedule = attrs.evolve(schedule, name=get(proc.family).default_schedule(proc.coupling.kind))
    inputs = proc.inputs
    if inputs == "auto":
        inputs = "tail" if proc.coupling.kind == "independent" else "tail+state"
    process = attrs.evolve(proc, schedule=schedule, inputs=inputs)

    network = spec.network
    if network.kind == "auto":
        network = attrs.evolve(network, kind="unet" if info.is_image else "mlp")

    distill = spec.distill
    if distill is not None and distill.method != "progressive":
        if distill.batch_size is None:
            distill = attrs.evolve(distill, batch_size=spec.train.batch_size)
        if distill.teacher_steps is None:
            distill = attrs.evolve(distill, teacher_steps=min(16, proc.steps) if distill.method == "consistency" else 64)
    elif distill is not None:
        if distill.stages is None and distill.to is not None:  # each halving made from a count above to
            distill = attrs.evolve(distill, stages=[n for n in halvings(proc.steps) if 2 * n > distill.to])
        if distill.batch_size is None:
            distill = attrs.evolve(distill, batch_size=spec.train.batch_size)
        distill = attrs.evolve(distill, coupling=sampling_coupling(distill.coupling, inputs))
        if distill.target == "auto":
            landing = landing_exists(get(proc.family), inputs, distill.coupling)
            distill = attrs.evolve(distill, target="landing" if landing else "teacher")

    sample = spec.sample
    if sample.steps is None:
        student = distill.to if distill and distill.method != "progressive" else \
            distill.stages[-1] if distill and distill.stages else None
        sample = attrs.evolve(sample, steps=student or proc.steps)
    ev = spec.eval
    if ev.steps is None:
        ev = attrs.evolve(ev, steps=[sample.steps])

    data = spec.data
    if info.is_image and data.image_size is None:
        data = attrs.evolve(data, image_size=info.shape[-1])
    if info.dim_meaning and data.dim is None:
        data = attrs.evolve(data, dim=info.shape[0])
    if info.size == 0 and not info.needs_root and data.num_examples is None:
        data = attrs.evolve(data, num_examples=50_000)
    return attrs.evolve(spec, process=process, network=network, sample=sample, eval=ev, distill=distill, data=data)
