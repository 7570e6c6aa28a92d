"""Evaluation of a model on low-dimensional data: every metric at every step count, beside its
noise floor (the same metric between two independent data samples of the same size).

Used at the end of ``mstar run`` and by ``mstar eval RUN`` (:func:`evaluate_run`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import torch

from mstar_engine.distributed.env import process_count, resolve_backend
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.distributed.launch import launch
from mstar_engine.data.catalog import DATASETS
from mstar_engine.data.images import load_images
from mstar_engine.data.load import load_data
from mstar_engine.data.offline import DataError
from mstar_engine.metrics.catalog import data_mismatch
from mstar_engine.metrics.anomaly import anomaly_scores, average_precision
from mstar_engine.metrics.distances import METRIC_FUNCTIONS, drop_last_coordinate_if_simplex, noise_floor
from mstar_engine.app.image_eval import IMAGE_METRICS, image_rows
from mstar_engine.app.report import results_table
from mstar_engine.rundir.files import write_text
from mstar_engine.rundir.records import append_jsonl, write_json
from mstar_engine.app.runs import Model, NonFiniteSamples, Run, load_students, sample_rho
from mstar_engine.spec.schema import Spec
from mstar_engine.train.stage import truncate_log


SCORE_METRICS = ("auprc",)  # computed from the model's bound, not from samples


def check_evaluable(spec: Spec, held_out_count: int) -> None:
    """Refuse, before any training, an evaluation the held-out split is too small for."""
    ev = spec.eval
    if not any(m in METRIC_FUNCTIONS for m in ev.metrics):
        return
    knn = "knn-kl" in ev.metrics
    need = ev.knn_k + 1 if knn else 2
    if min(ev.num_samples, held_out_count) >= need:
        return
    why = f"kNN-KL with k = {ev.knn_k} needs at least {need} samples" if knn else "a metric needs two samples or more"
    limit = (f"eval.num_samples (or mstar eval -n) is {ev.num_samples}" if ev.num_samples < held_out_count else
             f"the held-out split has {held_out_count} examples (data.holdout = {spec.data.holdout})")
    raise DataError(f"cannot evaluate: {why}, but {limit}. Raise data.holdout or data.num_examples, raise "
                    "eval.num_samples, lower eval.knn_k, or set eval.metrics = [] to skip evaluation")


def evaluate(model: Model, spec: Spec, held_out: torch.Tensor, train_data: torch.Tensor, seed: int,
             students: dict[int, Model] | None = None, seconds: dict[int, float] | None = None, *,
             download: bool = False, group: Group = SINGLE) -> dict:
    """Every metric at every step count, beside its noise floor (two independent data samples of
    the same size). With distilled ``students`` (by evaluation count), the teacher is also
    measured at T and at each student's count (undistilled, the block rule), and every student at
    its own count (rows with ``model = "student"`` and the stage's ``seconds``); a reflow student
    also at every ``eval.steps`` count, a consistency student at those up to its own. With several
    processes (``group``) the sampling is shared out and every process gets the same results."""
    students, seconds = students or {}, seconds or {}
    rows = [anomaly_row(model, spec, seed)] if "auprc" in spec.eval.metrics else []
    T = model.process.family.steps
    teacher_steps = sorted({*spec.eval.steps, *((T, *students) if students else ())}, reverse=True)
    if getattr(model.process, "evaluations", None):  # a sampler of fixed cost (the VAE's one decoder call)
        teacher_steps = [model.process.evaluations]
    runs = [("teacher", model, k) for k in teacher_steps] + \
        [("student", m, s) for k, m in students.items() for s in _student_budgets(spec, k)]

    def add(row: dict, who: str) -> None:
        if not math.isfinite(row["value"]):  # never reported: a NaN in a table reads as a result
            raise NonFiniteSamples(f"{row['metric']} of the {who} at {row['steps']} network evaluations is "
                                   f"{row['value']}: the samples are too far from the data for the metric (a "
                                   "diverged model?). Sample an earlier checkpoint, or retrain with a lower train.lr")
        if students:
            row["model"] = who
            if who == "student" and row["steps"] in seconds:
                row["seconds"] = round(seconds[row["steps"]], 1)
        rows.append(row)
    if any(m in IMAGE_METRICS for m in spec.eval.metrics):
        for who, row in image_rows(runs, spec, held_out, train_data, seed, download, group):
            add(row, who)
    ev = attrs.evolve(spec.eval, metrics=[m for m in spec.eval.metrics if m in METRIC_FUNCTIONS])
    simplex = model.process.family.domain == "simplex"
    n = min(ev.num_samples, held_out.shape[0])
    reference = drop_last_coordinate_if_simplex(held_out[:n].flatten(1), simplex)
    pool = torch.cat([train_data, held_out]).flatten(1)
    floors = {name: noise_floor(lambda a, b: _metric(name, a, b, ev), drop_last_coordinate_if_simplex(pool, simplex),
                                n, repeats=ev.repeats, generator=torch.Generator().manual_seed(seed + 7)).mean
              for name in ev.metrics}
    for who, sampler, steps in runs if ev.metrics else ():
        values = {name: [] for name in ev.metrics}
        for r in range(ev.repeats):
            x = sampler.sample(n, steps, seed=seed + 100 + r, batch_size=ev.batch_size,
                               precision=spec.sample.precision, group=group).flatten(1)
            x = drop_last_coordinate_if_simplex(x, simplex)
            for name in ev.metrics:
                values[name].append(_metric(name, x, reference, ev))
        for name in ev.metrics:
            add({"metric": name, "steps": steps, "value": float(np.mean(values[name])),
                 "std": float(np.std(values[name])), "noise_floor": float(floors[name]), "samples": n}, who)
    return {**results_header(spec, model), "results": rows}


def results_header(spec: Spec, model: Model) -> dict:
    """What a results record says of its model besides the rows."""
    return {"experiment": spec.experiment.name, "family": spec.process.family, "data": spec.data.name,
            "coupling": model.process.coupling_kind, "kind": model.process.name, "inputs": model.process.inputs}


def _student_budgets(spec: Spec, own: int) -> list[int]:
    """The evaluation counts a student made for ``own`` is measured at: its own for a progressive
    student (one per budget); every ``eval.steps`` count for a reflow student; those up to its own
    for a consistency student (its multistep sampler is made for few steps)."""
    method = spec.distill.method if spec.distill is not None else "progressive"
    if method == "progressive":
        return [own]
    return sorted({own, *(e for e in spec.eval.steps if method == "reflow" or e <= own)}, reverse=True)


def anomaly_row(model: Model, spec: Spec, seed: int) -> dict:
    """AUPRC of the per-example bound on the held-out split of every class: the classes outside
    ``data.classes`` (or ``eval.anomaly_classes``) are the anomalies. The noise floor is the
    AUPRC of a random score (the anomalies' share)."""
    ev = spec.eval
    data = load_images(attrs.evolve(spec.data, classes=None), spec.experiment.seed)
    x, labels = data.held_out, data.held_out_labels
    if x.shape[0] > ev.num_samples:
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + 11))[:ev.num_samples]
        x, labels = x[keep], labels[keep]
    anomalous = ev.anomaly_classes if ev.anomaly_classes is not None else \
        [c for c in range(data.num_classes) if c not in (spec.data.classes or [])]
    is_anomaly = torch.isin(labels, torch.tensor(anomalous)).numpy()
    scores = anomaly_scores(model, x, batch_size=ev.batch_size, seed=seed + 12)
    steps = getattr(model.process, "evaluations", None) or model.process.family.steps
    return {"metric": "auprc", "steps": steps, "value": average_precision(scores, is_anomaly),
            "std": 0.0, "noise_floor": float(is_anomaly.mean()), "samples": int(x.shape[0])}


class DuringTraining:
    """``train.eval_every``: the spec's evaluation of the EMA weights every ``every`` optimiser
    steps, one line per metric and step count in ``eval.jsonl`` (``{"step": ..., "metric": ...,
    "steps": ..., "value": ..., "noise_floor": ...}``) and one status line. A
    :class:`~mstar_engine.train.loop.Periodic` of the training loop."""

    def __init__(self, spec: Spec, process, held_out: torch.Tensor, train_data: torch.Tensor, run_dir,
                 log: Callable[[str], None], group: Group = SINGLE) -> None:
        self.every = spec.train.eval_every
        self.spec, self.process, self.held_out, self.train_data = spec, process, held_out, train_data
        self.path, self.log, self.group = Path(run_dir) / "eval.jsonl", log, group

    def resumed(self, step: int) -> None:
        if self.group.main:
            truncate_log(self.path, step, self.log)

    def __call__(self, step: int, ema: torch.nn.Module) -> None:
        was = ema.training
        ema.eval()
        try:
            model = Model(self.process, ema, rho=sample_rho(self.spec, self.process))
            results = evaluate(model, self.spec, self.held_out, self.train_data, self.spec.experiment.seed,
                               group=self.group)
        finally:
            ema.train(was)
        if self.group.main:
            self._write(step, results["results"])
            self.log(f"eval at step {step}: " + ", ".join(f"{r['metric']} ({r['steps']} steps) {r['value']:.4f}"
                                                          for r in results["results"]))

    def finished(self, step: int, results: dict) -> None:
        """The evaluation after training ends the curve (its trained-model rows, once)."""
        truncate_log(self.path, step - 1)
        self._write(step, [r for r in results["results"] if r.get("model", "teacher") == "teacher"
                           and r["steps"] in self.spec.eval.steps])

    def _write(self, step: int, rows: list[dict]) -> None:
        append_jsonl(self.path, [{"step": step, **{k: v for k, v in row.items() if k != "model"}} for row in rows])


def evaluate_run(run: Run, *, steps: list[int] | None = None, metrics: list[str] | None = None,
                 num_samples: int | None = None, repeats: int | None = None, fid_reference: str | None = None,
                 precision: str | None = None, download: bool = False, processes: int | None = None,
                 inception_weights: str | None = None, reference_images: int | None = None) -> dict | None:
    """``mstar eval RUN``: evaluate a loaded run on its held-out split (rebuilt from the spec),
    with the spec's ``[eval]`` settings unless given here. ``processes`` > 1 (or torchrun) shares
    the sampling out over that many processes (same results; None in processes other than rank 0)."""
    device = next(run.model.denoiser.parameters()).device.type
    return launch(_evaluate_run, process_count(processes, 1), resolve_backend(run.spec.devices.backend, device),
                  run, steps=steps, metrics=metrics, num_samples=num_samples, repeats=repeats,
                  fid_reference=fid_reference, precision=precision, download=download,
                  inception_weights=inception_weights, reference_images=reference_images)


def _evaluate_run(run: Run, *, steps: list[int] | None, metrics: list[str] | None, num_samples: int | None,
                  repeats: int | None, fid_reference: str | None, precision: str | None, download: bool,
                  inception_weights: str | None, reference_images: int | None, group: Group) -> dict | None:
    if steps is None and run.model.steps is not None:  # a student: at the evaluations it was made for
        steps = [run.model.steps]
    changes = {"steps": steps, "metrics": metrics, "num_samples": num_samples, "repeats": repeats,
               "fid_reference": fid_reference, "inception_weights": inception_weights,
               "reference_images": reference_images}
    ev = attrs.evolve(run.spec.eval, **{k: v for k, v in changes.items() if v is not None})
    if not ev.metrics:
        raise ValueError("no metrics to compute: pass --metrics (mstar list metrics) or set eval.metrics in the spec")
    info = DATASETS[run.spec.data.name]
    for name in ev.metrics:
        mismatch = data_mismatch(name, info.name, info.is_image)
        if mismatch:
            raise ValueError("; ".join(mismatch))
    if "auprc" in ev.metrics and DATASETS[run.spec.data.name].num_classes == 0:
        raise ValueError(f"auprc needs class labels and '{run.spec.data.name}' has none")
    T = run.model.process.family.steps
    too_many = [k for k in ev.steps if k > T]
    if too_many:
        raise ValueError(f"step counts {too_many} exceed the run's T = {T}; use counts between 1 and {T}")
    spec = attrs.evolve(run.spec, eval=ev)
    if precision is not None:
        spec = attrs.evolve(spec, sample=attrs.evolve(spec.sample, precision=precision))
    data = load_data(spec.data, spec.experiment.seed)
    check_evaluable(spec, data.held_out.shape[0])
    model, students = run.model, {}
    if model.steps is None and spec.distill is not None:  # the teacher: compare it with its students
        students = {n: m for n, m in load_students(run.path, next(model.denoiser.parameters()).device).items()
                    if n in (spec.distill.stages or ())}  # not students of an older, longer chain
        if students:
            model = attrs.evolve(model, rho=next(iter(students.values())).rho)
    results = evaluate(model, spec, data.held_out, data.train, spec.experiment.seed, students=students,
                       download=download, group=group)
    if not group.main:
        return None
    return {**results, "checkpoint": str(run.checkpoint), "step": run.step}


def _metric(name: str, a, b, ev) -> float:
    if name == "knn-kl":
        return METRIC_FUNCTIONS[name](a, b, k=ev.knn_k)
    if name == "mmd":
        return METRIC_FUNCTIONS[name](a, b, bandwidth=ev.mmd_bandwidth)
    return METRIC_FUNCTIONS[name](a, b)


def write_results(run_dir, results: dict) -> None:
    """``results.json`` and ``results.txt`` (the printed table) in a run directory."""
    write_json(run_dir / "results.json", results)
    write_text(run_dir / "results.txt", results_table(results) + "\n")
