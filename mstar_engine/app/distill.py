"""Every distillation stage of a run: T → T/2 → … → K, each student starting from its teacher.

Stage N → N/2 writes ``checkpoints/distill-{N/2}/`` (atomic, ``latest`` pointer, resumable) and
log lines to ``distill.jsonl``; a finished stage is not repeated. The students sample with the
distillation coupling (``distill.coupling``), which their checkpoints store.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import attrs
import tomli_w
import torch

from mstar_engine.app.evaluate import evaluate, results_header, write_results
from mstar_engine.app.model import build_denoiser, fingerprint
from mstar_engine.app.reflow import reflow_model
from mstar_engine.app.runs import Model, Run, RunError, load_run, sampling_rho
from mstar_engine.data.load import load_data
from mstar_engine.data.stream import training_source
from mstar_engine.distill.consistency import consistency_stage
from mstar_engine.distill.loop import Recipe, Stage, distill_stage
from mstar_engine.distill.stages import DistillError, derive_stages
from mstar_engine.distributed.env import process_count, resolve_backend, secondary_process, silent
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.distributed.launch import launch, log_to_stderr
from mstar_engine.rundir.claim import claim
from mstar_engine.spec import load_spec_text
from mstar_engine.spec.resolve import resolve
from mstar_engine.spec.schema import Spec
from mstar_engine.util.atomic import atomic_write


def stages_of(spec: Spec, run_dir: Path) -> list[Stage]:
    d, T = spec.distill, spec.process.steps
    counts = derive_stages(T, stages=d.stages) if d.stages is not None else derive_stages(T, to=d.to)
    teachers = [T, *counts[:-1]]
    return [Stage(n_t, n_s, run_dir / "checkpoints" / f"distill-{n_s}", i)
            for i, (n_t, n_s) in enumerate(zip(teachers, counts))]


def distill_model(spec: Spec, model: Model, data, run_dir: Path, *, resume: bool = True,
                  log: Callable[[str], None] = print, group: Group = SINGLE
                  ) -> tuple[Model, dict[int, Model], dict[int, float]]:
    """Distil the trained ``model`` (EMA weights) on ``data``'s training split stage by stage as
    ``spec.distill`` says, each student starting from its teacher; return the teacher with the
    distillation sampler's ρ, the students and the seconds each stage took (both by the students'
    evaluation counts)."""
    method = {"reflow": reflow_model, "consistency": _consistency}.get(spec.distill.method)
    if method is not None:
        return method(spec, model, data, run_dir, resume=resume, log=log, group=group)
    d, process, current = spec.distill, model.process, model.denoiser.eval()
    batches = _batches(spec, data, current)
    rho = sampling_rho(process, d.coupling)
    students, seconds = {}, {}
    for stage in stages_of(spec, run_dir):
        current, seconds[stage.student_steps] = distill_stage(
            process, current, _student_of(spec, process, current), batches, Recipe.of(d), stage, rho, resume=resume,
            seed=spec.experiment.seed, fingerprint=fingerprint(spec), log_every=spec.train.log_every,
            checkpoint_every=spec.train.checkpoint_every, clip_grad=spec.train.clip_grad, log=log, group=group,
            streams=spec.devices.processes)
        students[stage.student_steps] = Model(process, current, rho=rho, steps=stage.student_steps)
    return attrs.evolve(model, rho=rho), students, seconds


def _consistency(spec: Spec, model: Model, data, run_dir: Path, *, resume: bool, log: Callable[[str], None],
                 group: Group) -> tuple[Model, dict[int, Model], dict[int, float]]:
    """Consistency distillation of the teacher's deterministic (rho = 1) sampler into one student
    that samples in ``distill.to`` evaluations (multistep consistency sampling: the rho = 0 chain)."""
    d, process, teacher = spec.distill, model.process, model.denoiser.eval()
    f, seconds = consistency_stage(
        process, teacher, _student_of(spec, process, teacher), _batches(spec, data, teacher), d,
        run_dir / "checkpoints" / f"consistency-{d.to}", run_dir / "distill.jsonl", teacher_steps=d.teacher_steps,
        evaluations=d.to, ema_target=d.ema_target, sigma_data=d.sigma_data, weight=d.consistency_weight,
        seed=spec.experiment.seed,
        fingerprint=fingerprint(spec), resume=resume, log_every=spec.train.log_every,
        checkpoint_every=spec.train.checkpoint_every, clip_grad=spec.train.clip_grad, log=log, group=group)
    rho = torch.zeros(process.family.steps + 1, dtype=torch.float64)
    teacher_model = attrs.evolve(model, rho=sampling_rho(process, "deterministic"))
    return teacher_model, {d.to: Model(process, f, rho=rho, steps=d.to)}, {d.to: seconds}


def _batches(spec: Spec, data, teacher: torch.nn.Module) -> Callable:
    """The distillation's batch source: the training split in ``distill.batch_size`` batches."""
    device = next(teacher.parameters()).device
    return training_source(data, spec.distill.batch_size, spec.experiment.seed,
                           labelled=spec.network.class_conditional, flip=spec.data.flip, workers=spec.train.workers,
                           pin_memory=device.type == "cuda")


def _student_of(spec: Spec, process, teacher: torch.nn.Module) -> torch.nn.Module:
    """A student with its teacher's weights, on its device: the spec's network without dropout."""
    student = build_denoiser(attrs.evolve(spec, network=attrs.evolve(spec.network, dropout=0.0)), process,
                             num_classes=int(getattr(teacher.backbone, "num_classes", 0)))
    student.load_state_dict(teacher.state_dict())
    return student.to(next(teacher.parameters()).device)


def distill_spec(run_dir: Path, to: int, overrides: tuple[str, ...] | list[str] = ()) -> Spec:
    """The run's resolved spec with ``[distill] to = to`` (its other distillation settings kept)
    and ``distill.*`` overrides applied, validated and resolved."""
    other = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("distill.")]
    if other:
        raise DistillError(f"mstar distill changes only [distill] settings, not {', '.join(other)}; change the "
                           "others with mstar run (a new run)")
    path = run_dir / "spec.resolved.toml"
    data = _explicit(load_spec_text(path.read_text(), str(path), semantic=False).spec)
    section = {k: v for k, v in data.get("distill", {}).items() if k not in ("to", "stages")}
    data["distill"] = {**section, "to": to}
    loaded = load_spec_text(tomli_w.dumps(data), str(path), overrides)
    return resolve(loaded.spec)


def _explicit(obj) -> dict:
    """The settings of a spec that differ from their defaults, as a TOML-ready dict (a resolved
    spec written out in full would set options that do not apply, which validation refuses)."""
    out = {}
    for f in attrs.fields(type(obj)):
        value = getattr(obj, f.name)
        default = f.default.factory() if isinstance(f.default, attrs.Factory) else f.default
        if value is None or value == default:
            continue
        out[f.name] = _explicit(value) if attrs.has(type(value)) else value
    return out


def distill_run(run_dir: str | Path, to: int, overrides: tuple[str, ...] | list[str] = (), *, resume: bool = True,
                log: Callable[[str], None] = print, processes: int | None = None) -> dict | None:
    """``mstar distill RUN --to K``: distil a trained run's teacher stage by stage, evaluate the
    teacher beside every student, write the results and return them. ``processes`` (default: the
    run's ``devices.processes``, or torchrun's count) distil data-parallel; rank 0 evaluates.
    The run directory is locked for the whole command."""
    run_dir = Path(run_dir)
    if not (run_dir / "spec.resolved.toml").is_file():
        load_run(run_dir)  # says what is missing, before a lock file is created there
    with nullcontext() if secondary_process() else claim(run_dir, "distill", log=log):
        run = load_run(run_dir)
        spec = distill_spec(run_dir, to, overrides)
        total = spec.train.steps
        if spec.train.epochs is None and run.step < total:
            raise RunError(f"the teacher in {run_dir} is trained for {run.step} of {total} steps; finish training "
                           "with mstar run on its spec (it resumes) before distilling")
        world = process_count(processes, spec.devices.processes)
        accelerator = next(run.model.denoiser.parameters()).device.type
        return launch(_distill_run, world, resolve_backend(spec.devices.backend, accelerator), run, spec,
                      resume=resume, log=log_to_stderr if world > 1 else log)


def _distill_run(run: Run, spec: Spec, *, resume: bool, log: Callable[[str], None], group: Group) -> dict | None:
    data = load_data(spec.data, spec.experiment.seed)
    if spec.distill.batch_size % group.world:
        raise DistillError(f"distill.batch_size {spec.distill.batch_size} does not split evenly over {group.world} "
                           f"processes; use a multiple of {group.world}")
    teacher, students, seconds = distill_model(spec, run.model, data, run.path, resume=resume,
                                               log=log if group.main else silent, group=group)
    results = {**results_header(spec, teacher), "results": []}
    if spec.eval.metrics:  # the sampling shared out over the processes
        results = evaluate(teacher, spec, data.held_out, data.train, spec.experiment.seed, students, seconds,
                           group=group)
    if not group.main:
        return None
    resolved = attrs.asdict(spec, filter=lambda _, v: v is not None)  # the run now records its [distill]
    atomic_write(run.path / "spec.resolved.toml", lambda fh: fh.write(tomli_w.dumps(resolved).encode()))
    write_results(run.path, results)
    return results
