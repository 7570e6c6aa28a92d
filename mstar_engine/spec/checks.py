"""Semantic checks that need no computation: cross-field rules, family vs data domain,
divisibility, files and packages present. Each check yields located :class:`Issue` objects."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import attrs

from mstar_engine.data.catalog import DATASETS, expand_path
from mstar_engine.distill.stages import halving_problem, halvings, landing_exists, sampling_coupling
from mstar_engine.families import REGISTRY, get
from mstar_engine.families.base import ScheduleValueError
from mstar_engine.families.domains import DOMAINS, family_accepts
from mstar_engine.metrics.catalog import METRICS, data_mismatch, default_inception_path
from mstar_engine.metrics.inception_weights import weights_problems
from mstar_engine.networks.unet import UNET_PRESETS
from mstar_engine.schedules.registry import build_for_spec
from mstar_engine.spec.errors import Issue, Location, locate
from mstar_engine.spec.kind_checks import check_kind
from mstar_engine.spec.memory import memory_issue
from mstar_engine.spec.schema import Spec

#: Gaussian DDPM-like schedules; every other named schedule is star-shaped (information in s_t).
MARKOV_SCHEDULES = ("linear", "cosine")


class Checker:
    def __init__(self, spec: Spec, locs: dict[tuple, Location], file: str):
        self.spec = spec
        self.locs = locs
        self.file = file
        self.issues: list[Issue] = []

    def is_set(self, *path: str) -> bool:
        """True when the user wrote this key (in the file or as an override)."""
        return tuple(path) in self.locs

    def add(self, path: tuple, message: str, hint: str = "", severity: str = "error",
            related: tuple[tuple, ...] = ()) -> None:
        """Record an issue about ``path``, located at ``path`` if the user wrote it, else at the
        first written key among ``related`` (the other side of a conflict)."""
        where = next((p for p in (path, *related) if p in self.locs), path)
        self.issues.append(Issue(locate(self.locs, where, self.file), path, message, hint, severity))

    def run(self) -> list[Issue]:
        for check in CHECKS:
            check(self)
        return self.issues


def check_domain(c: Checker) -> None:
    spec, info = c.spec, DATASETS[c.spec.data.name]
    fam = get(spec.process.family)
    data_domain = info.domain_for(spec.data.range)
    if data_domain == "any":  # a user's file: checked against the family's domain when loaded
        return
    if family_accepts(fam.domain, data_domain):
        return
    hint = f"choose a family for {DOMAINS[data_domain].description} (mstar list families)"
    if info.is_image and fam.domain == "unit-box":
        hint = 'set data.range = "unit" to scale images into (0, 1)'
    c.add(("process", "family"), f"the {fam.name} family needs {DOMAINS[fam.domain].requirement}, but dataset "
          f"'{info.name}' gives {DOMAINS[data_domain].description}", hint)


def check_schedule(c: Checker) -> None:
    sched, proc, fam = c.spec.process.schedule, c.spec.process, get(c.spec.process.family)
    if sched.name not in ("auto", "custom", "snr-matched") and sched.name not in fam.schedules:
        c.add(("process", "schedule", "name"), f"schedule '{sched.name}' does not apply to the {fam.name} family",
              f"use one of {', '.join(sorted((*fam.schedules, 'custom', 'snr-matched')))}, or auto")
    if sched.name == "custom":
        if (sched.values is None) == (sched.file is None):
            c.add(("process", "schedule", "name"), "a custom schedule needs exactly one of values or file",
                  "add values = [...] (length steps or steps + 1) or file = \"schedule.npy\"")
        if sched.values is not None and len(sched.values) not in (proc.steps, proc.steps + 1):
            c.add(("process", "schedule", "values"), f"a custom schedule for steps = {proc.steps} needs "
                  f"{proc.steps} or {proc.steps + 1} values, got {len(sched.values)}")
        elif sched.values is not None and sched.file is None:
            check_custom(c, sched.values, None)
        if sched.file is not None:
            if not sched.file.endswith(".npy"):
                c.add(("process", "schedule", "file"), f"'{sched.file}' is not a .npy file",
                      "save the array with numpy.save")
            elif not expand_path(sched.file).is_file():
                c.add(("process", "schedule", "file"), f"schedule file '{sched.file}' not found",
                      "give a path relative to the working directory", "environment")
            elif sched.values is None:
                check_custom(c, None, sched.file)
    else:
        for key in ("values", "file"):
            if getattr(sched, key) is not None:
                c.add(("process", "schedule", key), f"{key} is only used by the custom schedule",
                      'set process.schedule.name = "custom" or remove it')
    if c.is_set("process", "schedule", "reference") and sched.name != "snr-matched":
        c.add(("process", "schedule", "reference"), "reference is only used by the snr-matched schedule",
              'set process.schedule.name = "snr-matched" or remove it')


def check_custom(c: Checker, values: list[float] | None, file: str | None) -> None:
    """Custom schedule values (or a file that exists) must hold a valid schedule for this family and
    steps: the rules of :mod:`mstar_engine.schedules.custom`, which would refuse them when the run starts."""
    proc, fam, data = c.spec.process, get(c.spec.process.family), c.spec.data
    pseudo = values is not None and len(values) == proc.steps + 1  # index 0 is the pseudo step t = 0
    try:
        build_for_spec("custom", proc.steps, proc.family, DATASETS[data.name].event_shape(data.dim, data.image_size),
                       values=values, file=None if file is None else expand_path(file))
    except ValueError as exc:
        problem = str(exc).removeprefix("custom schedule: ")
        if file is not None:
            c.add(("process", "schedule", "file"), f"'{file}': {problem}", "see the accepted forms in "
                  "mstar_engine/schedules/custom.py (one value per step, in the family's range)")
        elif isinstance(exc, ScheduleValueError):
            index, primary = exc.step if pseudo else exc.step - 1, fam.custom_primary or fam.schedule_params[0]
            c.add(("process", "schedule", "values", index), f"value {values[index]:g} at index {index} (step t = "
                  f"{exc.step}) is out of range for the {fam.name} family's schedule",
                  f"every value ({primary}" + ("" if exc.name == primary else f", here {exc.name}") + f") must be "
                  f"{exc.rule}; index i is step t = {'i' if pseudo else 'i + 1'}")
        else:
            c.add(("process", "schedule", "values"), problem)


def check_coupling(c: Checker) -> None:
    proc = c.spec.process
    coupling = proc.coupling
    if coupling.kind == "constant" and coupling.rho is None:
        c.add(("process", "coupling", "rho"), "a constant coupling needs rho", "add rho = 0.5 (a value in [0, 1])")
    if coupling.kind not in ("constant", "learned") and coupling.rho is not None:
        c.add(("process", "coupling", "rho"), f"rho is only used by the constant and learned couplings, not "
              f"'{coupling.kind}'", 'set process.coupling.kind = "constant" or remove rho')
    if c.is_set("process", "coupling", "lr") and coupling.kind != "learned":
        c.add(("process", "coupling", "lr"), "lr is only used by the learned coupling",
              'set process.coupling.kind = "learned" or remove it')
    name = proc.schedule.name if proc.schedule.name != "auto" else get(proc.family).default_schedule(coupling.kind)
    star_schedule = name not in MARKOV_SCHEDULES
    if coupling.kind == "deterministic" and proc.inputs == "state" and star_schedule:
        c.add(("process", "inputs"), "a deterministic coupling with a star-shaped schedule and the state input alone "
              "is known to fail (x_t carries little information under a star-shaped schedule)",
              'use inputs = "tail+state", or a DDPM-like schedule', "warning")
    if coupling.kind != "independent" and proc.inputs == "tail":
        c.add(("process", "inputs"), "under a coupling with rho > 0 the tail statistic alone is not sufficient",
              'use inputs = "tail+state" (the default for coupled processes)', "warning")
    if proc.loss == "eps-mse" and not get(proc.family).predicts_noise:
        c.add(("process", "loss"), f"eps-mse is the Gaussian noise-prediction loss; the {get(proc.family).name} family "
              "predicts x0", 'use loss = "kl", "kl-rescaled" or "x0-mse"')


def check_data(c: Checker) -> None:
    data = c.spec.data
    info = DATASETS[data.name]
    if data.dim is not None and not info.dim_meaning:
        c.add(("data", "dim"), f"dataset '{data.name}' has a fixed shape {info.shape}; dim cannot be set",
              "remove data.dim")
    if data.classes is not None and info.num_classes == 0:
        c.add(("data", "classes"), f"dataset '{data.name}' has no class labels", "remove data.classes")
    for i, k in enumerate(data.classes or []):
        if info.num_classes > 0 and not 0 <= k < info.num_classes:
            c.add(("data", "classes", i), f"class {k} does not exist: '{data.name}' has classes "
                  f"0..{info.num_classes - 1}")
    if not info.is_image:
        for key in ("image_size", "crop", "range", "flip"):
            if c.is_set("data", key):
                c.add(("data", key), f"{key} applies to image datasets; '{data.name}' is not one", f"remove data.{key}")
    if not info.needs_root:
        for key in ("root", "download"):
            if c.is_set("data", key):
                c.add(("data", key), f"dataset '{data.name}' is built in and reads no local folder",
                      f"remove data.{key}")
    elif data.download and not info.downloadable:
        c.add(("data", "download"), f"dataset '{data.name}' cannot be downloaded", "remove data.download")
    elif not data.download:
        problem = info.missing_files(data.root)
        if problem:
            hint = ("put the files there, or allow a download with data.download = true (or mstar run --download)"
                    if info.downloadable else "put the files there")
            c.add(("data", "root"), problem, hint, "environment")
    problem = info.missing_module()
    if problem:
        c.add(("data", "name"), problem, "", "environment")


def check_network(c: Checker) -> None:
    if c.spec.process.kind == "vae":
        return  # its own encoder and decoder (spec/kind_checks.py); [network] does not apply
    net, info = c.spec.network, DATASETS[c.spec.data.name]
    kind = net.kind if net.kind != "auto" else ("unet" if info.is_image else "mlp")
    if kind == "unet" and not info.is_image:
        c.add(("network", "kind"), f"the U-Net needs image data; '{info.name}' is not an image dataset",
              'use kind = "mlp" (or auto)')
    if net.preset is not None and kind != "unet":
        c.add(("network", "preset"), "presets are U-Net configurations", 'set network.kind = "unet"')
    other = "unet" if kind == "mlp" else "mlp"
    if c.is_set("network", other):
        c.add(("network", other), f"[network.{other}] is set but the network is a {kind}",
              f'remove it or set network.kind = "{other}"')
    if net.class_conditional and info.num_classes == 0:
        c.add(("network", "class_conditional"), f"dataset '{info.name}' has no class labels",
              "use a labelled dataset or remove class_conditional")
    if kind == "unet" and info.is_image:
        check_unet_shape(c, info.event_shape(c.spec.data.dim, c.spec.data.image_size)[-1])


def check_unet_shape(c: Checker, size: int) -> None:
    """What the U-Net's constructor would refuse: an image size its levels cannot halve, attention
    over channels that do not split into heads of ``head_channels``."""
    net = c.spec.network
    arch = UNET_PRESETS[net.preset] if net.preset is not None else attrs.asdict(net.unet)
    where = ("network", "preset") if net.preset is not None else ("network", "unet", "channel_mult")
    mult, heads = list(arch["channel_mult"]), int(arch["head_channels"])
    factor = 2 ** (len(mult) - 1)
    if size % factor:
        c.add(where, f"the U-Net's {len(mult)} levels halve the resolution {len(mult) - 1} times, so the "
              f"{size}×{size} images would need a size that is a multiple of {factor}",
              "use fewer levels in network.unet.channel_mult, or another data.image_size")
        return
    levels = [(size // 2 ** i, arch["channels"] * m) for i, m in enumerate(mult)]
    attended = {ch for r, ch in levels if r in arch["attention_resolutions"]} | {levels[-1][1]}  # + the middle
    bad = sorted(ch for ch in attended if ch > heads and ch % heads)
    if bad:
        c.add(("network", "preset") if net.preset is not None else ("network", "unet", "head_channels"),
              f"attention over {bad[0]} channels does not split into heads of head_channels = {heads}",
              f"use a head_channels that divides {bad[0]} (e.g. {math.gcd(bad[0], heads)}), or change "
              "network.unet.channels")


def check_train(c: Checker) -> None:
    train, dev = c.spec.train, c.spec.devices
    if train.epochs is not None and c.is_set("train", "steps"):
        c.add(("train", "epochs"), "set either train.steps or train.epochs, not both", "remove one of them")
    if train.batch_size % dev.processes:
        c.add(("train", "batch_size"), f"batch_size {train.batch_size} does not split evenly over "
              f"{dev.processes} processes", f"use a multiple of {dev.processes}", related=(("devices", "processes"),))
    elif (train.batch_size // dev.processes) % train.accumulation:
        c.add(("train", "accumulation"), f"the per-process batch {train.batch_size // dev.processes} does not split "
              f"into {train.accumulation} micro-batches", "make batch_size / processes a multiple of accumulation",
              related=(("train", "batch_size"), ("devices", "processes")))
    steps = c.spec.process.steps
    if train.t_per_rollout > steps:
        c.add(("train", "t_per_rollout"), f"{train.t_per_rollout} steps drawn from one roll-out exceed its "
              f"process.steps = {steps} steps (they are drawn with replacement, so the extra ones only repeat "
              "steps, at the memory cost of more examples per batch)", f"use at most {steps}",
              related=(("process", "steps"),))
    if train.precision == "fp16" and dev.accelerator == "cpu":
        c.add(("train", "precision"), "fp16 autocast needs a GPU", 'use precision = "bf16" or "fp32" on the CPU',
              related=(("devices", "accelerator"),))
    distill = c.spec.distill
    if distill is not None and distill.batch_size is not None and distill.batch_size % dev.processes:
        c.add(("distill", "batch_size"), f"batch_size {distill.batch_size} does not split evenly over "
              f"{dev.processes} processes", f"use a multiple of {dev.processes}", related=(("devices", "processes"),))


def check_sample(c: Checker) -> None:
    sample, steps = c.spec.sample, c.spec.process.steps
    if sample.steps is not None and sample.steps > steps:
        c.add(("sample", "steps"), f"{sample.steps} network evaluations exceed process.steps = {steps}",
              f"use at most {steps}")
    if (sample.guidance != 1.0 or sample.class_label is not None) and not c.spec.network.class_conditional:
        key = "class_label" if sample.class_label is not None else "guidance"
        c.add(("sample", key), "guidance and class_label need a class-conditional network",
              "set network.class_conditional = true")
    proc = c.spec.process
    if sample.coupling == "deterministic" and proc.inputs != "state" and proc.coupling.kind != "deterministic":
        c.add(("sample", "coupling"), "this model reads the tail statistic, whose law under the rho = 1 chain is "
              "not the one it was trained on", 'train with process.inputs = "state", or sample with coupling = '
              '"model"', "warning", related=(("process", "inputs"),))
    n = DATASETS[c.spec.data.name].num_classes
    if sample.class_label is not None and n > 0 and sample.class_label >= n:
        c.add(("sample", "class_label"), f"class {sample.class_label} does not exist: classes are 0..{n - 1}")


def check_distill(c: Checker) -> None:
    d, steps = c.spec.distill, c.spec.process.steps
    if d is None or d.method != "progressive" or c.spec.process.kind == "vae":  # the rest: spec/kind_checks.py
        return
    if (d.to is None) == (d.stages is None):
        c.add(("distill",), "[distill] needs exactly one of to or stages",
              f"add to = 8 (steps {steps} are halved until 8) or stages = [{steps // 2}, {steps // 4}, ...]")
        return
    inputs = c.spec.process.inputs
    reads_tail = inputs != "state"
    if reads_tail and d.target != "landing":
        c.add(("distill",), "this model reads the tail statistic, so each student can only regress on its teacher's "
              "expected next prediction; measured students were no better than the undistilled sampler "
              "(BENCHMARKS.md, progressive distillation)",
              'to distil, train with process.inputs = "state" and process.coupling.kind = "ddpm" (the student then '
              'follows the deterministic teacher)', "warning")
    coupling = sampling_coupling(d.coupling, inputs)
    if d.target == "landing" and not landing_exists(get(c.spec.process.family), inputs, coupling):
        fits = ", ".join(n for n, cls in sorted(REGISTRY.items()) if cls.coordinatewise)
        charts = ", ".join(n for n, cls in sorted(REGISTRY.items()) if cls.has_chart)
        c.add(("distill", "target"), "the landing target needs process.inputs = \"state\" and a family whose noise "
              f"maps act coordinate by coordinate ({fits}), or one with a chart ({charts}) under "
              "distill.coupling = \"deterministic\"", 'use target = "teacher" or "auto"')
    if d.to is not None:
        problem = halving_problem(steps, d.to)
        if problem:
            options = halvings(steps)
            hint = (f"use one of {', '.join(map(str, options))}" if options else
                    f"process.steps = {steps} is odd and cannot be halved: use a power-of-two multiple of the "
                    "target, e.g. 64 steps for to = 8")
            c.add(("distill", "to"), problem, hint)
        return
    previous = steps
    for i, n in enumerate(d.stages):
        if n * 2 != previous:
            c.add(("distill", "stages", i), f"stage {i + 1} has {n} steps but must halve the previous {previous}",
                  f"use {previous // 2}" if previous % 2 == 0 and previous > 1 else "")
            return
        previous = n


def check_eval(c: Checker) -> None:
    ev, info = c.spec.eval, DATASETS[c.spec.data.name]
    if c.spec.train.eval_every is not None and not ev.metrics:
        c.add(("train", "eval_every"), "eval_every evaluates eval.metrics during training, and eval.metrics is empty",
              'set eval.metrics (e.g. ["mmd"]; mstar list metrics) or remove train.eval_every')
    for i, name in enumerate(ev.metrics):
        metric = METRICS[name]
        mismatch = data_mismatch(name, info.name, info.is_image)
        if mismatch:
            c.add(("eval", "metrics", i), *mismatch)
        if name == "knn-kl" and info.domain in DOMAINS and DOMAINS[info.domain].discrete:
            c.add(("eval", "metrics", i), "knn-kl needs continuous data: categorical samples repeat exactly, so "
                  "nearest-neighbour distances are zero and the estimate is meaningless", "use mmd or energy")
        if metric.needs_labels and info.num_classes == 0:
            c.add(("eval", "metrics", i), f"{name} needs class labels; '{info.name}' has none")
        elif metric.needs_labels and c.spec.data.classes is None and ev.anomaly_classes is None:
            c.add(("eval", "metrics", i), "auprc needs normal classes (data.classes) or eval.anomaly_classes",
                  "set data.classes = [0] to train on class 0 and treat the others as anomalies")
    if any(METRICS[m].needs_inception for m in ev.metrics):
        weights = expand_path(ev.inception_weights) if ev.inception_weights else default_inception_path()
        where = ("eval", "inception_weights") if ev.inception_weights else ("eval", "metrics")
        for problem, fix, severity in weights_problems(weights, ev.metrics):
            c.add(where, problem, fix, severity)
    if ev.fid_reference and "fid" in ev.metrics and not expand_path(ev.fid_reference).is_file():
        c.add(("eval", "fid_reference"), f"FID reference statistics not found at {expand_path(ev.fid_reference)}",
              "give an .npz with mu and sigma (python -m pytorch_fid --save-stats writes one), or unset it to use "
              "the training images", "environment")
    for i, k in enumerate(ev.anomaly_classes or []):
        if info.num_classes > 0 and k >= info.num_classes:
            c.add(("eval", "anomaly_classes", i), f"class {k} does not exist: '{info.name}' has classes "
                  f"0..{info.num_classes - 1}")
    for i, n in enumerate(ev.steps or []):
        if n > c.spec.process.steps:
            c.add(("eval", "steps", i), f"{n} network evaluations exceed process.steps = {c.spec.process.steps}")


def check_output(c: Checker) -> None:
    """The run directory output_dir/name (and each [compare] variant's folder under it) must be a
    folder that can be created: no existing file in its place or on its path."""
    exp = c.spec.experiment
    run_dir = Path(exp.output_dir) / exp.name
    for target in [run_dir, *(run_dir / "compare" / name for name in c.spec.compare)]:
        blocker = _first_existing(target)
        if blocker is None:
            continue
        key = ("experiment", "output_dir") if blocker in (Path(exp.output_dir), *Path(exp.output_dir).parents) \
            else ("experiment", "name")
        if not blocker.is_dir():
            c.add(key, f"the run directory {str(target)!r} cannot be created: {str(blocker)!r} is a file, not a "
                  "folder", "set experiment.output_dir (or experiment.name) to a folder, or move the file away",
                  "environment", related=(("experiment", "name"),))
            return
        if not os.access(blocker, os.W_OK | os.X_OK):
            c.add(key, f"the run directory {str(target)!r} cannot be written: no write permission in "
                  f"{str(blocker)!r}", "choose an experiment.output_dir you can write to", "environment",
                  related=(("experiment", "name"),))
            return


def _first_existing(path):
    """``path`` or its nearest existing parent (None if nothing on the way exists)."""
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return None


def check_memory(c: Checker) -> None:
    """One training step (and sampling, distillation, the dataset) must fit in the memory of the
    device the spec runs on: an environment issue naming both figures when it does not."""
    if any(i.severity == "error" for i in c.issues):
        return  # the estimate needs a consistent spec
    found = memory_issue(c.spec)
    if found is not None:
        candidates, message, hint = found
        where = next((p for p in candidates if p in c.locs), candidates[0])
        c.add(where, message, hint, "environment")


CHECKS: list[Callable[[Checker], None]] = [check_domain, check_kind, check_schedule, check_coupling, check_data,
                                           check_network, check_train, check_sample, check_distill, check_eval,
                                           check_output, check_memory]


def semantic_issues(spec: Spec, locs: dict[tuple, Location], file: str) -> list[Issue]:
    return Checker(spec, locs, file).run()
