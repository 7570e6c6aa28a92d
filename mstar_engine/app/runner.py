"""Execute a compiled plan: write the run directory, then train → sample → evaluate.

Run directory (ARCHITECTURE.md): ``spec.toml`` as given, ``spec.resolved.toml``, ``plan.txt``,
``checkpoints/`` (atomic, ``latest`` pointer), ``metrics.jsonl``, ``samples/``, ``results.json``,
``results.txt`` (the printed table) and ``loss.svg`` (the training loss); image runs add
``samples/grid.png`` and ``samples/trajectories.png`` (x̂0 during sampling). Every stage is
resumable: training continues from the latest checkpoint, then every distillation stage from its
own (``checkpoints/distill-N``); sampling and evaluation are recomputed from the final weights.
With ``[distill]``, samples come from the student made for ``sample.steps``. :func:`run` executes
the spec and then each of its ``[compare]`` variants (:mod:`.compare`).

With several processes (``devices.processes``, a :class:`~mstar_engine.distributed.Group`) every
process trains (and distils) its shard of each batch, and the sampling batches are shared out; rank
0 alone writes the run files and results.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import attrs
import tomli_w
import torch

from mstar_engine.data.catalog import DATASETS
from mstar_engine.data.dataset import LoadedData, check_for_family
from mstar_engine.data.load import load_data
from mstar_engine.data.stream import training_source
from mstar_engine.util.devices import training_device
from mstar_engine.distributed.env import secondary_process, silent
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.distributed.launch import launch, log_to_stderr
from mstar_engine.app.distill import distill_model
from mstar_engine.app.compare import record_comparison, variants
from mstar_engine.app.side_by_side import jobs_for, run_side_by_side
from mstar_engine.app.evaluate import DuringTraining, check_evaluable, evaluate, write_results
from mstar_engine.plan import Plan, render_plan
from mstar_engine.app.plots import eval_curve_svgs, loss_curve_svg, trajectory_grid
from mstar_engine.app.model import build_denoiser, build_process, fingerprint
from mstar_engine.process.normalise import TailNorm
from mstar_engine.app.runs import Model, sample_rho, save_grid, save_samples
from mstar_engine.spec import LoadedSpec
from mstar_engine.spec.schema import Spec
from mstar_engine.rundir.claim import claim
from mstar_engine.rundir.files import write_text
from mstar_engine.train.checkpoint import find_checkpoint
from mstar_engine.train.loop import Settings, train
from mstar_engine.train.stage import check_fingerprint

NORM_EXAMPLES = 4096  # training examples used to estimate the tail normalisation
NORM_ELEMENTS = 20_000_000  # at most this many values (examples × T × event size) in that roll-out


def write_run_files(plan: Plan, loaded: LoadedSpec) -> None:
    """The spec as given, resolved, and the plan; each written atomically, resolved spec last (it
    marks a run directory)."""
    run_dir = plan.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "spec.toml", loaded.text)
    write_text(run_dir / "plan.txt", render_plan(plan))
    resolved = attrs.asdict(plan.spec, filter=lambda _, v: v is not None)
    write_text(run_dir / "spec.resolved.toml", tomli_w.dumps(resolved))


def check_resumable(plan: Plan, resume: bool, log: Callable[[str], None]) -> tuple[Path, dict] | None:
    """Refuse, before anything is written, a spec whose settings differ from those of the newest
    usable training checkpoint in the run directory (resuming would mix two models); return that
    checkpoint (path, state) for training to resume from. Unusable newer checkpoints are set aside
    (``*.pt.bad``) with a warning. Called with the run's lock held."""
    if not resume:
        return None
    found = find_checkpoint(plan.run_dir / "checkpoints" / "train", warn=log, set_aside=True)
    if found is not None:
        check_fingerprint(found, fingerprint(plan.spec))
    return found


@attrs.frozen
class Prepared:
    """Everything training needs, built from a resolved spec: data, process, untrained denoiser
    and the batch source (a pure function of the example position)."""

    data: LoadedData
    process: object                # DiffusionProcess
    denoiser: torch.nn.Module
    source: Callable               # start_example -> iterator of x0 (or (x0, labels)) batches
    images: bool
    label_dropout: float


def prepare(spec: Spec, log: Callable[[str], None] = print) -> Prepared:
    seed = spec.experiment.seed
    images = DATASETS[spec.data.name].is_image
    data = load_data(spec.data, seed)
    check_evaluable(spec, data.held_out.shape[0])
    torch.manual_seed(seed)
    process = build_process(spec.process, data.event_shape)
    for note in process.notes:
        log(f"note: {note}")
    check_for_family(data, process.family)
    family = process.family
    norm = None
    if process.needs_tail_norm:
        n_norm = max(1, min(NORM_EXAMPLES, NORM_ELEMENTS // (family.steps * math.prod(family.event_shape))))
        norm = TailNorm.estimate(family, [data.train[:n_norm].to(torch.float64)], process.rho(),
                                 torch.Generator().manual_seed(seed + 2))
    conditional = spec.network.class_conditional
    denoiser = build_denoiser(spec, process, norm, num_classes=data.num_classes if conditional else 0)
    device = training_device(spec.devices.accelerator)
    denoiser.to(device)
    source = training_source(data, spec.train.batch_size, seed, labelled=conditional, flip=spec.data.flip,
                             workers=spec.train.workers, pin_memory=device.type == "cuda")
    return Prepared(data, process, denoiser, source, images,
                    spec.network.label_dropout if conditional else 0.0)


def execute(plan: Plan, loaded: LoadedSpec, *, resume: bool = True, log: Callable[[str], None] = print,
            download: bool = False, group: Group = SINGLE) -> dict | None:
    """Run the plan; the results (None in processes other than rank 0)."""
    spec = plan.spec
    seed = spec.experiment.seed
    found = None  # the checkpoint to resume from, loaded once (other processes find it themselves)
    if group.main:
        found = check_resumable(plan, resume, log)
        write_run_files(plan, loaded)
    else:
        log = silent
    group.barrier()
    p = prepare(spec, log)
    data, process = p.data, p.process
    total = plan.stages[0].optimizer_steps
    if total is None:
        total = math.ceil(spec.train.epochs * data.train.shape[0] / spec.train.batch_size)
    periodic = DuringTraining(spec, process, data.held_out, data.train, plan.run_dir, log, group) \
        if spec.train.eval_every else None
    ema = train(process, p.denoiser, p.source, Settings.of(spec.train), total, plan.run_dir, seed=seed,
                fingerprint=fingerprint(spec), resume=resume, log=log, label_dropout=p.label_dropout, group=group,
                streams=spec.devices.processes, periodic=periodic, found=found)
    model = Model(process, ema.eval(), rho=sample_rho(spec, process))
    students, seconds = {}, {}
    if spec.distill is not None:
        model, students, seconds = distill_model(spec, model, data, plan.run_dir, resume=resume, log=log,
                                                 group=group)
    served = students.get(spec.sample.steps, model)  # sample with the student made for sample.steps
    samples = served.sample(spec.sample.num_samples, spec.sample.steps, seed=seed + 3,
                           batch_size=spec.sample.batch_size, final=spec.sample.final,
                           label=spec.sample.class_label, guidance=spec.sample.guidance,
                           precision=spec.sample.precision, group=group)
    if group.main:
        loss_curve_svg(plan.run_dir / "metrics.jsonl", plan.run_dir / "loss.svg")
        save_samples(plan.run_dir / "samples" / "samples.npz", samples)
        if p.images:
            save_grid(plan.run_dir / "samples" / "grid.png", samples, spec.data.range)
            trajectory_grid(served, min(8, spec.sample.num_samples), plan.run_dir / "samples" / "trajectories.png",
                            spec.data.range, seed=seed + 4)
    results = evaluate(model, spec, data.held_out, data.train, seed, students=students, seconds=seconds,
                       download=download, group=group)
    if not group.main:
        return None
    if periodic is not None:
        periodic.finished(total, results)
        eval_curve_svgs(plan.run_dir / "eval.jsonl", plan.run_dir)
    write_results(plan.run_dir, results)
    return results


def run(plan: Plan, loaded: LoadedSpec, *, resume: bool = True, overwrite: bool = False, download: bool = False,
        log: Callable[[str], None] = print) -> dict | None:
    """``mstar run``: execute the spec, then each ``[compare]`` variant; returns the main results
    with a ``compare`` entry (variant name → its results) when there are variants.
    The run directory (and each variant's) is locked for the whole call; ``resume`` False starts
    afresh, refused over an existing run unless ``overwrite`` moves it aside
    (:func:`~mstar_engine.rundir.claim.claim`).
    With ``devices.processes > 1`` (or under torchrun) this starts the processes and runs in each
    of them; their log lines go to standard error from rank 0."""
    world = plan.devices.processes  # the spec's, or torchrun's
    others = [plan.run_dir / "compare" / name for name in plan.spec.compare or {}]
    held = nullcontext() if secondary_process() else \
        claim(plan.run_dir, "run", resume=resume, overwrite=overwrite, also=others, log=log)
    with held:
        return launch(_run_all, world, plan.devices.backend, plan, loaded, resume=resume, download=download,
                      log=log_to_stderr if world > 1 else log)


def _run_all(plan: Plan, loaded: LoadedSpec, *, resume: bool, download: bool, log: Callable[[str], None],
             group: Group) -> dict | None:
    others = variants(plan, loaded) if plan.spec.compare else []
    jobs = jobs_for([plan, *(p for *_, p in others)], plan.spec.devices.jobs) if group.world == 1 else 1

    def announce(name: str, variant_plan: Plan) -> None:
        if group.main:
            log(f"[compare] {name}: {' '.join(plan.spec.compare[name])}; run directory {variant_plan.run_dir}")
    if jobs > 1:  # independent runs side by side, each in a process of its own
        for name, _, variant_plan in others:
            announce(name, variant_plan)
        log(f"{1 + len(others)} models, {jobs} at a time (devices.jobs; 1 runs them one after the other)")
        options = {"resume": resume, "download": download, "group": SINGLE}
        results, *done = run_side_by_side([(plan.spec.experiment.name, execute, (plan, loaded), options),
                                           *((name, execute, (p, v), options) for name, v, p in others)], jobs, log)
        compared = {name: res for (name, *_), res in zip(others, done)}
    else:
        results = execute(plan, loaded, resume=resume, log=log, download=download, group=group)
        compared = {}
        for name, variant, variant_plan in others:
            announce(name, variant_plan)
            compared[name] = execute(variant_plan, variant, resume=resume, log=log, download=download, group=group)
    if not group.main or not plan.spec.compare:
        return results
    results["compare"] = compared
    record_comparison(plan, results)
    return results
