"""Quality against network evaluations (NFE), per dataset (issue #14, "The table").

Every model is trained on the same number of training examples (``--steps`` optimiser steps ×
``--batch`` examples, ``--t-per-rollout`` steps t drawn from each example's roll-out; T = 64), then
sampled at each NFE in ``--nfe`` (default 1 2 4 8 16 64):

| row                | training (on top of ``specs/<family>.toml``)                       | sampler at K < T    |
|--------------------|--------------------------------------------------------------------|---------------------|
| star-shaped        | coupling independent, input tail, the family's default schedule    | block rule (ρ = 0)  |
| M-Star learned     | coupling learned, input auto (tail+state)                          | block rule, own ρ   |
| M-Star ddpm        | coupling ddpm, input auto (tail+state)                             | block rule, own ρ   |
| M-Star distilled   | coupling ddpm, input state; distilled T → T/2 → … → min(NFE)       | the student at K    |
| Gaussian DDPM      | Gaussian family, cosine schedule, coupling ddpm, state, eps-mse    | ancestral (ρ*)      |
| Gaussian DDIM      | the Gaussian DDPM network                                          | deterministic ρ = 1 |
| Gaussian distilled | the Gaussian DDIM teacher distilled like M-Star distilled          | the student at K    |
| flow-matching      | Gaussian family, process.kind flow-matching (uniform times)        | K Euler steps       |
| flow-matching-heun | the flow-matching network                                          | Heun, K evaluations |
| rectified-flow-1   | the flow-matching network + 1 reflow round, a 1-step student       | the student, K Euler|
| energy-score       | Gaussian family, process.kind energy-score (energy score, β = 0.1) | K steps, Algorithm 2|
| consistency        | the Gaussian DDPM recipe, sample.coupling deterministic; distilled | multistep, K ≤ 8    |
|                    | with distill.method consistency to 8 evaluations (teacher grid 16) |                     |

The last five rows (``--models kinds``; not in the default selection) are the other model kinds of
the engine (``process.kind``), trained on the same examples, seeds, steps and MLP as the rest
(flow matching and the energy score ignore the coupling, inputs and schedule settings; the energy
score runs its network on 8 draws per training example, so a step costs more, see the recorded
seconds); they are evaluated at every ``--nfe`` (the consistency student at those up to
``--consistency-to``, default 8). rectified-flow-1 samples the reflow student with K Euler steps at
every NFE; reflow (``--reflow-*``: pairs from the teacher's 64-step ODE, default as many as training
examples) and consistency (``--consistency-*``; teacher grid min(16, T)) get the optimiser steps of
the whole progressive chain T → 1 (log2 T × ``--distill-steps``) at ``--distill-lr`` unless told
otherwise. The consistency row runs only where the engine distils with distill.method =
"consistency": a run first distils a tiny model that way (a few seconds) and, when the schema
refuses the method or no consistency student comes out, says so and leaves the row out (a
fallback of the engine to another method is never reported as consistency).

Distilled rows at NFE = T are their teacher (sampled with ρ = 1, or with its own coupling under
``--distill-coupling model``); distillation (``--distill-steps`` per stage, lr ``--distill-lr``,
distill.coupling ``--distill-coupling``, default deterministic) adds 6 × steps-per-stage optimiser
steps on top of the common training budget. Each row records the coupling actually used.

Datasets: each family's synthetic set (``specs/<family>.toml``), the real sets quakes (vMF),
skye (Dirichlet), connectomes (Wishart), and digits (8×8 pixels) for the Gaussian family and, in
(0, 1), for Beta; the network is an MLP everywhere (``--hidden`` wide, ``--blocks`` blocks).

Scoring. Every sample is mapped into the data's domain first (a no-op for in-domain samples):
sphere: normalised; simplex: clamped to 1e-6 and renormalised; SPD: symmetrised, eigenvalues
clipped to 1e-6; unit box: clipped to [0, 1]; positive: clamped to 1e-6; circle: wrapped to
[−π, π); categorical: one-hot of the argmax (the Gaussian rows train on the one-hot coordinates,
passed as ``data.name = "file"``; the native models' x̂0 is a probability vector, also argmaxed).
Metrics: energy distance (every domain), MMD, kNN-KL (k = 10; not on categorical data), between n
samples and n held-out examples (n = min(``--samples``, held-out size)); simplex points lose their
last coordinate. Sets with fewer than 100 held-out examples (skye, connectomes) compare n = half
the data with a random half of the whole set, 4 times (k = min(10, n // 3)). Noise floor: the
same metric between two disjoint data samples of size n (5 draws). Digits: these three metrics on
the 64 pixel values (eval.metrics offers only FID/IS for images, which need Inception weights).

Goals (energy distance, the 8 synthetic family sets, means over seeds; the other kinds' rows are
shown beside M-Star in their own summary and take no part in the goals): (a) at 8 and 16 NFE the
best M-Star row (distilled, learned, ddpm) is below star-shaped by more than the larger seed sd of
the two, on every family; (b) M-Star distilled at 8 NFE is within 10 % of the best 64-NFE row of
star-shaped and M-Star; (c) the best M-Star row at 64 NFE has a mean no larger than star-shaped's
on at least 6 of the 8 families.

Usage:
    python benchmarks/nfe.py                       # the whole table (see the budget below)
    python benchmarks/nfe.py --quick               # 2 datasets, 3 models, 2 seeds, short training
    python benchmarks/nfe.py --datasets beta skye --models star-shaped "M-Star ddpm" --seeds 3
    python benchmarks/nfe.py --models kinds        # the other model kinds (consistency where available)
    python benchmarks/nfe.py --models all          # both: the kinds beside M-Star in every table
    python benchmarks/nfe.py --report              # tables, goals and plots from the JSONL alone

Appends one JSONL row per dataset × model × seed × NFE to ``benchmarks/results/nfe.jsonl``
(``nfe-quick.jsonl`` with ``--quick``) with the settings, commit, machine and wall times, as soon
as each trained network is evaluated; a re-run skips the (dataset, model, seed) triples already
there for the same engine (``mstar_engine/`` and ``specs/`` trees) and settings, and interrupted trainings resume from their checkpoints
(``--workdir``). Tables, goals and plots (``--plots``: SVG, and PNG when matplotlib is installed,
which is optional) use the rows of the last (engine, settings) in the file.

Budget (2-core x86_64 CPU, 2 jobs × 1 thread, measured 2026-12-03): the default table (11
datasets, 7 rows from 5 trained networks, 3 seeds, 500 steps) took 45 minutes, partly sharing the
machine; ``--steps 2000 --distill-steps 100`` on the 8 family sets with the 4 M-Star/star-shaped
rows takes about an hour and a half. connectomes and digits-beta (``--datasets connectomes
digits-beta``, 7 rows, 3 seeds) took 1 h 35 min, partly sharing the machine. ``--models kinds``
(not measured as a whole; 1 job, 1 thread, gaussian set, 2026-12-03): a flow network trains at about
0.02 s a step, the energy-score one at 0.03 s (8 draws), reflow with its 45 000 pairs took 17 s and
the evaluation 5 s per network, so roughly a minute per dataset and seed at 500 steps (consistency,
once available, adds a Gaussian training and its distillation).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import attrs
import numpy as np
import torch
from tabulate import tabulate

from mstar_engine.app.distill import distill_run
from mstar_engine.app.runner import execute
from mstar_engine.app.runs import load_run, load_students
from mstar_engine.data.catalog import DATASETS as CATALOG
from mstar_engine.data.load import load_data
from mstar_engine.data.synthetic import make_synthetic
from mstar_engine.metrics.distances import METRIC_FUNCTIONS, drop_last_coordinate_if_simplex, noise_floor
from mstar_engine.plan import compile_plan
from mstar_engine.rundir.records import append_jsonl, read_jsonl
from mstar_engine.spec import load_spec
from mstar_engine.spec.schema import CONSISTENCY_WEIGHTS
from mstar_engine.train.checkpoint import find_checkpoint

ROOT = Path(__file__).resolve().parent.parent
#: dataset → (shipped spec it starts from, overrides); the first eight are the family sets of the goals.
DATASETS = {f: (f, []) for f in ("gaussian", "beta", "dirichlet", "gamma", "vmf", "von-mises", "wishart", "categorical")}
DATASETS |= {"quakes": ("vmf", ["data.name=quakes"]), "skye": ("dirichlet", ["data.name=skye"]),
             "connectomes": ("wishart", ["data.name=connectomes"]),
             "digits-gaussian": ("gaussian", ["data.name=digits"]),
             "digits-beta": ("beta", ["data.name=digits", "data.range=unit"])}
FAMILY_SETS = list(DATASETS)[:8]
GAUSSIAN = ["process.family=gaussian", "process.schedule.name=cosine", "process.coupling.kind=ddpm",
            "process.inputs=state", "process.loss=eps-mse"]
#: trained network → its overrides (the schedule stays the family's default for the coupling)
TRAININGS = {"star": ["process.coupling.kind=independent", "process.inputs=tail"],
             "learned": ["process.coupling.kind=learned", "process.inputs=auto"],
             "ddpm": ["process.coupling.kind=ddpm", "process.inputs=auto"],
             "state": ["process.coupling.kind=ddpm", "process.inputs=state"], "gaussian": GAUSSIAN,
             # the other model kinds (R^d, Gaussian noise; the coupling, inputs and schedule settings are ignored)
             "flow": ["process.family=gaussian", "process.kind=flow-matching", "process.flow.solver=euler"],
             "energy": ["process.family=gaussian", "process.kind=energy-score"],
             "consistency": [*GAUSSIAN, "sample.coupling=deterministic"]}
#: trainings with Gaussian noise: on categorical data they train on the one-hot coordinates (data.name = "file")
GAUSSIAN_TRAININGS = ("gaussian", "flow", "energy", "consistency")
#: table row → (trained network, sampler): own = its trained coupling, ddim = ρ = 1, distilled = students of
#: progressive distillation, heun = the flow network with Heun steps, reflow = the last reflow round's student,
#: consistency = the consistency-distilled student (multistep sampling below its evaluations).
MODELS = {"star-shaped": ("star", "own"), "M-Star learned": ("learned", "own"), "M-Star ddpm": ("ddpm", "own"),
          "M-Star distilled": ("state", "distilled"), "Gaussian DDPM": ("gaussian", "own"),
          "Gaussian DDIM": ("gaussian", "ddim"), "Gaussian distilled": ("gaussian", "distilled"),
          "flow-matching": ("flow", "own"), "flow-matching-heun": ("flow", "heun"),
          "rectified-flow-1": ("flow", "reflow"), "energy-score": ("energy", "own"),
          "consistency": ("consistency", "consistency")}
MSTAR = ("M-Star distilled", "M-Star learned", "M-Star ddpm")
#: the rows of the original table (the default selection) and the other model kinds (``--models kinds``)
TABLE = list(MODELS)[:7]
KINDS = list(MODELS)[7:]
#: row groups --models also accepts
ALIASES = {"table": TABLE, "kinds": KINDS, "all": list(MODELS)}
#: opt-in (--datasets ... or all): each costs more than all the other sets together (module docstring)
HEAVY = ("connectomes", "digits-beta")
DEFAULTS = dict(steps=500, batch=32, t_per_rollout=8, hidden=128, blocks=2, T=64, distill_steps=50, distill_lr=1e-4,
                samples=1000, nfe=[1, 2, 4, 8, 16, 64], seeds=3, datasets=[d for d in DATASETS if d not in HEAVY],
                models=TABLE)
QUICK = dict(steps=200, hidden=64, distill_steps=20, samples=500, seeds=2, datasets=["gaussian", "vmf"],
             models=["star-shaped", "M-Star ddpm", "M-Star distilled"])
#: settings recorded (and keyed) only when they differ from these (None: derived, see distill_settings())
OPTIONAL_DEFAULTS = {"coupling_lr": None, "distill_coupling": "deterministic", "reflow_to": 1, "reflow_rounds": 1,
                     "reflow_steps": None, "reflow_lr": None, "reflow_teacher_steps": 64, "reflow_pairs": None,
                     "consistency_to": None, "consistency_steps": None, "consistency_lr": None,
                     "consistency_teacher_steps": None, "consistency_weight": "uniform"}
FLOOR, MIN_HELD_OUT, TINY_REPEATS, GOAL_METRIC = 1e-6, 100, 4, "energy"
REFERENCES: dict = {}  # (dataset, seed) → Reference, per process


def settings_of(a) -> dict:
    keys = ("steps", "batch", "t_per_rollout", "hidden", "blocks", "T", "distill_steps", "distill_lr", "samples", "nfe")
    optional = {k: getattr(a, k) for k in OPTIONAL_DEFAULTS}  # recorded when set
    return ({k: getattr(a, k) for k in keys} | {"trainings": TRAININGS}
            | {k: v for k, v in optional.items() if v != OPTIONAL_DEFAULTS[k]})


def overrides(a, dataset: str, training: str, seed: int, out: Path) -> list[str]:
    extra = TRAININGS[training]
    if training == "learned" and a.coupling_lr is not None:
        extra = extra + [f"process.coupling.lr={a.coupling_lr}"]
    warmup = min(500, a.steps // 10)
    common = [f"process.steps={a.T}", f"train.steps={a.steps}", f"train.batch_size={a.batch}",
              f"train.t_per_rollout={a.t_per_rollout}", f"train.warmup_steps={warmup}", f"train.log_every={a.steps}",
              f"train.checkpoint_every={max(a.steps // 4, 1)}", "network.kind=mlp", f"network.mlp.hidden={a.hidden}",
              f"network.mlp.blocks={a.blocks}", "eval.metrics=[]", "sample.num_samples=2", "sample.coupling=model",
              "compare={}", f"experiment.seed={seed}", f"experiment.name={training}", f"experiment.output_dir={out}"]
    if training in GAUSSIAN_TRAININGS and dataset == "categorical":  # one-hot data: pass its coordinates
        path = out / f"tokens-{seed}.npy"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, make_synthetic("token-mixture", 50_000, seed).numpy())
        extra = extra + ["data.name=file", f"data.root={path}"]
    return [*DATASETS[dataset][1], *common, *extra]


# ----------------------------------------------------------------------------------------- phases
def train(a, dataset: str, training: str, seed: int, out: Path) -> tuple[Path, str | None]:
    """The trained run's directory (and no note: kept for rows that carry one)."""
    loaded = load_spec(ROOT / "specs" / f"{DATASETS[dataset][0]}.toml", overrides(a, dataset, training, seed, out),
                       ready=True)
    plan = compile_plan(loaded)
    execute(plan, loaded, resume=True, log=lambda _: None)  # resumes an interrupted run from its checkpoint
    return plan.run_dir, None


#: samplers whose rows need a distillation after training (their trained network's own run directory)
DISTILLED = ("distilled", "reflow", "consistency")


class ConsistencyUnavailable(RuntimeError):
    """The engine does not (yet) distil with distill.method = "consistency"."""


def distill_settings(a, sampler: str) -> tuple[int, list[str]]:
    """(distill.to, the distill.* overrides) of a distilled row (module docstring). The reflow and
    consistency students get the optimiser steps of the whole progressive chain T → 1 (log2 T stages
    of --distill-steps) unless --reflow-steps / --consistency-steps say otherwise."""
    chain = round(math.log2(a.T)) * a.distill_steps
    if sampler == "distilled":
        return min(a.nfe), [f"distill.steps_per_stage={a.distill_steps}", f"distill.lr={a.distill_lr}",
                            f"distill.coupling={a.distill_coupling}"]
    if sampler == "reflow":
        steps = a.reflow_steps or max(chain // a.reflow_rounds, 1)  # per round
        return a.reflow_to, ["distill.method=reflow", f"distill.rounds={a.reflow_rounds}",
                             f"distill.teacher_steps={a.reflow_teacher_steps}", f"distill.steps_per_stage={steps}",
                             f"distill.lr={a.reflow_lr or a.distill_lr}",
                             *([f"distill.pairs={a.reflow_pairs}"] if a.reflow_pairs else [])]
    if sampler == "consistency":
        return consistency_to(a), ["distill.method=consistency",
                                  f"distill.teacher_steps={a.consistency_teacher_steps or min(16, a.T)}",
                                  f"distill.steps_per_stage={a.consistency_steps or chain}",
                                  f"distill.lr={a.consistency_lr or a.distill_lr}",
                                  f"distill.consistency_weight={a.consistency_weight}"]
    raise ValueError(f"sampler {sampler!r} is not distilled")


def distil(a, run_dir: Path, sampler: str = "distilled") -> None:
    to, extra = distill_settings(a, sampler)
    distill_run(run_dir, to, extra, resume=True, log=lambda _: None)
    if sampler in ("reflow", "consistency"):  # the student must be the method's own, not a fallback's
        student_folder(run_dir, sampler)


def student_folder(run_dir: Path, method: str) -> Path:
    """The completed ``checkpoints/<method>-*`` folder (the last, for reflow rounds); for consistency,
    :class:`ConsistencyUnavailable` when there is none (an engine that does not distil that way)."""
    def number(folder: Path):
        tail = folder.name.rsplit("-", 1)[-1]
        return (0, int(tail)) if tail.isdigit() else (1, tail)
    folders = sorted(run_dir.glob(f"checkpoints/{method}-*"), key=number)
    found = find_checkpoint(folders[-1], warn=lambda _: None) if folders else None
    if found is not None and found[1].get("complete"):
        return folders[-1]
    other = sorted(f.name for f in (run_dir / "checkpoints").glob("*") if f.name not in ("train", method))
    why = (f"mstar distill with distill.method={method} left no completed checkpoints/{method}-* student in {run_dir}"
           + (f" (it wrote {', '.join(other)})" if other else ""))
    raise ConsistencyUnavailable(why) if method == "consistency" else RuntimeError(why)


_CONSISTENCY: dict = {}  # the probe's answer, per process


def first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else ""


def consistency_available() -> tuple[bool, str]:
    """(True, "") when this engine distils with distill.method = "consistency": the schema accepts it
    and a tiny run (T = 4, two training steps) distilled that way yields a consistency student that
    samples finite values at 1 and 2 evaluations; else (False, why). A few seconds, cached."""
    if "answer" in _CONSISTENCY:
        return _CONSISTENCY["answer"]
    base = [*TRAININGS["consistency"], "compare={}", "eval.metrics=[]"]
    try:
        load_spec(ROOT / "specs" / "gaussian.toml", [*base, "distill.method=consistency", "distill.to=2"])
    except Exception as exc:  # noqa: BLE001 - a refusal of any kind means: not available
        answer = (False, f"the spec schema refuses distill.method = consistency ({type(exc).__name__}: "
                  f"{first_line(exc)})")
    else:
        with tempfile.TemporaryDirectory(prefix="nfe-consistency-probe-") as tmp:
            try:
                loaded = load_spec(ROOT / "specs" / "gaussian.toml", [
                    *base, "process.steps=4", "train.steps=2", "train.batch_size=8", "train.t_per_rollout=1",
                    "train.warmup_steps=0", "train.log_every=2", "train.checkpoint_every=2", "network.kind=mlp",
                    "network.mlp.hidden=8", "network.mlp.blocks=1", "data.num_examples=64", "sample.num_samples=2",
                    "experiment.name=probe", f"experiment.output_dir={tmp}"], ready=True)
                plan = compile_plan(loaded)
                execute(plan, loaded, resume=False, log=lambda _: None)
                distill_run(plan.run_dir, 2, ["distill.method=consistency", "distill.teacher_steps=4",
                                              "distill.steps_per_stage=2", "distill.batch_size=8"],
                            resume=False, log=lambda _: None)
                student_folder(plan.run_dir, "consistency")
                model = load_students(plan.run_dir, warn=lambda _: None)[2]
                if not all(torch.isfinite(model.sample(8, k, seed=0)).all() for k in (1, 2)):
                    raise ConsistencyUnavailable("the probe's consistency student samples non-finite values")
                answer = (True, "")
            except Exception as exc:  # noqa: BLE001 - any failure of the probe: not available (said why)
                answer = (False, f"{type(exc).__name__}: {first_line(exc)}")
    _CONSISTENCY["answer"] = answer
    return answer


def project(x: torch.Tensor, domain: str) -> torch.Tensor:
    """Samples mapped into the data's domain (module docstring); in-domain samples are unchanged."""
    if domain == "sphere":
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if domain == "simplex":
        x = x.clamp_min(FLOOR)
        return x / x.sum(-1, keepdim=True)
    if domain == "spd":
        w, v = torch.linalg.eigh((x + x.transpose(-1, -2)) / 2)
        return v @ torch.diag_embed(w.clamp_min(FLOOR)) @ v.transpose(-1, -2)
    if domain == "unit-box":
        return x.clamp(0, 1)
    if domain == "positive":
        return x.clamp_min(FLOOR)
    if domain == "circle":
        return torch.remainder(x + math.pi, 2 * math.pi) - math.pi
    if domain == "categorical":
        return torch.nn.functional.one_hot(x.argmax(-1), x.shape[-1]).to(x.dtype)
    return x


class Reference:
    """The held-out data a dataset's samples are scored against, and the noise floors."""

    def __init__(self, a, dataset: str, seed: int) -> None:
        spec = load_spec(ROOT / "specs" / f"{DATASETS[dataset][0]}.toml",
                         [*DATASETS[dataset][1], "eval.metrics=[]"]).spec
        data = load_data(spec.data, seed)
        self.domain = CATALOG[spec.data.name].domain_for(spec.data.range)
        self.metrics = ["mmd", "energy"] if self.domain == "categorical" else ["knn-kl", "mmd", "energy"]
        pool = self._flat(torch.cat([data.train, data.held_out]).to(torch.float64))
        held = self._flat(data.held_out.to(torch.float64))
        g = torch.Generator().manual_seed(seed + 7)
        if held.shape[0] >= MIN_HELD_OUT:
            self.n = min(a.samples, held.shape[0])
            self.refs = [held[:self.n]]
        else:  # tiny sets: half the data against random halves of the whole set
            self.n = pool.shape[0] // 2
            self.refs = [pool[torch.randperm(pool.shape[0], generator=g)[:self.n]] for _ in range(TINY_REPEATS)]
        self.k = min(10, self.n // 3)
        self.floor = {m: noise_floor(lambda x, y, m=m: self._metric(m, x, y), pool, self.n, repeats=5,
                                     generator=g).mean for m in self.metrics}

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return drop_last_coordinate_if_simplex(x, self.domain == "simplex").flatten(1)

    def _metric(self, name: str, x, y) -> float:
        return METRIC_FUNCTIONS[name](x, y, k=self.k) if name == "knn-kl" else METRIC_FUNCTIONS[name](x, y)

    def score(self, model, nfe: int, seed: int) -> dict:
        x = model.sample(self.n * len(self.refs), nfe, seed=seed, batch_size=1000)
        x = self._flat(project(x, self.domain))
        parts = x.split(self.n)
        return {m: float(np.mean([self._metric(m, p, r) for p, r in zip(parts, self.refs)])) for m in self.metrics}


def row_nfes(a, name: str) -> list[int]:
    """The NFEs a row is evaluated at: every --nfe, but the consistency student only up to its
    own evaluations (multistep consistency sampling below them; --consistency-to)."""
    return [n for n in a.nfe if n <= consistency_to(a)] if MODELS[name][1] == "consistency" else list(a.nfe)


def consistency_to(a) -> int:
    """The consistency student's evaluations: --consistency-to, default min(8, T)."""
    return a.consistency_to or min(8, a.T)


def evaluate(a, run_dir: Path, models: list[str], ref: Reference, seed: int) -> dict[str, list[dict]]:
    """Every model of this trained network at every NFE: {model: [{nfe, metrics, seconds}]}."""
    run = load_run(run_dir, warn=lambda _: None)
    students = load_students(run_dir, warn=lambda _: None)
    deterministic = attrs.evolve(run.model, rho=torch.ones(a.T + 1, dtype=torch.float64))
    teacher = deterministic if a.distill_coupling == "deterministic" else run.model
    out = {}
    for name in models:
        sampler, rows = MODELS[name][1], []
        for nfe in row_nfes(a, name):
            if sampler in ("own", "ddim"):
                model = {"own": run.model, "ddim": deterministic}[sampler]
            elif sampler == "heun":  # the flow network, integrated with Heun steps (K evaluations in all)
                model = attrs.evolve(run.model, process=attrs.evolve(run.model.process, solver="heun"))
            elif sampler == "distilled":
                model = teacher if nfe == a.T else students[nfe]
            else:  # reflow, consistency: one student, sampled with nfe evaluations
                model = students[distill_settings(a, sampler)[0]]
            started = time.perf_counter()
            metrics = ref.score(model, nfe, seed=1000 + seed)
            rows.append({"nfe": nfe, "metrics": metrics, "seconds": round(time.perf_counter() - started, 2),
                         "coupling_used": model.process.coupling_kind, "inputs": run.model.process.inputs,
                         "kind": run.spec.process.kind})
        out[name] = rows
    return out


def run_table(a) -> None:
    """Train, distil and evaluate every (dataset, seed, trained network) whose rows are missing, in
    ``a.jobs`` processes; rows are appended (by this process only) as each finishes."""
    settings = settings_of(a)
    key = {"commit": commit(), "engine": engine_version(),
           "settings": hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]}
    work = Path(a.workdir or ROOT / "runs" / "nfe" / key["settings"])
    done = {}
    for r in read_jsonl(a.out):
        if same_version(r, key):
            done.setdefault((r["dataset"], r["model"], r["seed"]), set()).add(r["nfe"])
    print(f"every model: {a.steps} optimiser steps × {a.batch} examples = {a.steps * a.batch} training examples "
          f"({a.t_per_rollout} steps t per roll-out), T = {a.T}; distillation adds {a.distill_steps} steps per stage; "
          f"settings {key['settings']}, commit {key['commit'][:10]}, {a.jobs} job(s) × {a.threads} thread(s)", flush=True)
    models = list(a.models)
    if "consistency" in models:  # behind the engine's support: rows only once it distils that way
        available, why = consistency_available()
        if not available:
            models.remove("consistency")
            print(f"consistency row skipped: this engine does not distil with distill.method = consistency yet "
                  f"({why})", flush=True)
    tasks = []
    for dataset in a.datasets:
        for seed in range(a.seeds):
            for training in TRAININGS:
                wanted = [m for m in models if MODELS[m][0] == training
                          and not set(row_nfes(a, m)) <= done.get((dataset, m, seed), set())]
                skip = dataset == "categorical" and training in GAUSSIAN_TRAININGS and a.skip_gaussian_categorical
                if wanted and not skip:
                    tasks.append((dataset, seed, training, wanted))
    base = {"config": settings, **key, "machine": f"{platform.machine()}, {a.jobs} job(s) × {a.threads} thread(s), "
            f"torch {torch.__version__}" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")}
    if a.jobs <= 1:
        for task in tasks:
            record(a, *run_task(a, *task, work, base))
        return
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(a.jobs, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(a.threads,)) as pool:
        for future in as_completed([pool.submit(run_task, a, *task, work, base) for task in tasks]):
            record(a, *future.result())


def run_task(a, dataset: str, seed: int, training: str, wanted: list[str], work: Path, base: dict):
    """(rows, status line) of one trained network: train, distil when a distilled row is wanted, evaluate."""
    try:
        ref = REFERENCES.get((dataset, seed)) or REFERENCES.setdefault((dataset, seed), Reference(a, dataset, seed))
        started = clock()
        run_dir, note = train(a, dataset, training, seed, work / dataset / f"seed{seed}")
        trained = clock()
        for sampler in dict.fromkeys(MODELS[m][1] for m in wanted if MODELS[m][1] in DISTILLED):
            distil(a, run_dir, sampler)
        distilled = clock()
        results = evaluate(a, run_dir, wanted, ref, seed)
        evaluated = clock()
    except Exception as exc:  # noqa: BLE001 - one failed network must not stop a table of hours; a re-run retries it
        return [], f"FAILED {dataset} seed {seed} {training}: {type(exc).__name__}: {exc}"
    seconds = {"train": trained[0] - started[0], "distill": distilled[0] - trained[0],
               "evaluate": evaluated[0] - distilled[0], "train_cpu": trained[1] - started[1],
               "distill_cpu": distilled[1] - trained[1], "evaluate_cpu": evaluated[1] - distilled[1]}
    seconds = {k: round(v, 1) for k, v in seconds.items()}
    rows = [{"dataset": dataset, "family": dataset_family(dataset), "model": m, "training": training, "seed": seed,
             **r, "noise_floor": ref.floor, "samples": ref.n, "knn_k": ref.k, "train_examples": a.steps * a.batch,
             "seconds": {**seconds, "this_nfe": r["seconds"]}, "overrides": [*DATASETS[dataset][1], *TRAININGS[training]],
             **({"distill": distill_settings(a, MODELS[m][1])[1]} if MODELS[m][1] in DISTILLED[1:] else {}),
             **({"note": note} if note else {}),
             **base, "date": time.strftime("%Y-%m-%d %H:%M")} for m in wanted for r in results[m]]
    shutil.rmtree(run_dir, ignore_errors=True)
    return rows, (f"{dataset} seed {seed} {training}: " + ", ".join(f"{k} {v} s" for k, v in seconds.items()) + "; "
                  + ", ".join(f"{r['model']} {r['nfe']}: {r['metrics'][GOAL_METRIC]:.4g}" for r in rows))


def record(a, rows: list[dict], line: str) -> None:
    if rows:
        append_jsonl(a.out, rows)
    print(line, flush=True)


def clock() -> tuple[float, float]:
    """(wall, CPU time of this process over all its threads) in seconds."""
    return time.perf_counter(), time.process_time()


def dataset_family(dataset: str) -> str:
    return DATASETS[dataset][0]  # each dataset starts from its family's spec


def same_version(row: dict, key: dict) -> bool:
    """Rows of the same settings and engine (rows before the engine key: the same commit)."""
    ours = ("engine", row["engine"]) if "engine" in row else ("commit", row.get("commit"))
    return row.get("settings") == key["settings"] and key[ours[0]] == ours[1]


def engine_version() -> str:
    """What the numbers depend on: git's tree hashes of mstar_engine/ and specs/ at HEAD, with
    "-dirty" when either differs from HEAD in the work tree (rows survive unrelated commits)."""
    try:
        run = lambda *cmd: subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                          check=True).stdout.strip()
        trees = run("rev-parse", "HEAD:mstar_engine", "HEAD:specs").split()
        dirty = run("status", "--porcelain", "--", "mstar_engine", "specs")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return hashlib.sha1(" ".join(trees).encode()).hexdigest()[:12] + ("-dirty" if dirty else "")


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------------------- aggregate, report
def aggregate(rows: list[dict]) -> dict:
    """{dataset: {"metrics": [...], "floor": {m: mean}, "cells": {(model, nfe, metric): (mean, sd, seeds)}}}."""
    out = {}
    for r in rows:
        d = out.setdefault(r["dataset"], {"metrics": list(r["metrics"]), "floors": {}, "values": {}})
        d["floors"].setdefault(r["seed"], r["noise_floor"])
        for m, v in r["metrics"].items():
            d["values"].setdefault((r["model"], r["nfe"], m), []).append(v)
    for d in out.values():
        d["floor"] = {m: float(np.mean([f[m] for f in d["floors"].values()])) for m in d["metrics"]}
        d["cells"] = {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
                      for k, v in d["values"].items()}
    return out


def tables(agg: dict, metrics: list[str] | None = None) -> str:
    parts = []
    for dataset, d in agg.items():
        nfes = sorted({k[1] for k in d["cells"]})
        models = [m for m in MODELS if any(k[0] == m for k in d["cells"])]
        for metric in metrics or d["metrics"]:
            if metric not in d["metrics"]:
                continue
            body = [[m, *(_cell(d["cells"].get((m, n, metric))) for n in nfes)] for m in models]
            body.append(["noise floor", *[f"{d['floor'][metric]:.4g}"] * len(nfes)])
            seeds = max(c[2] for c in d["cells"].values())
            parts.append(f"\n{dataset} ({dataset_family(dataset)} family), {metric}, mean ± sd over {seeds} seeds, "
                         "lower is better\n" + tabulate(body, headers=["model", *(f"NFE {n}" for n in nfes)],
                                                        tablefmt="github", disable_numparse=True))
    return "\n".join(parts)


def _cell(c) -> str:
    return "-" if c is None else f"{c[0]:.4g} ± {c[1]:.2g}"


def goals(agg: dict) -> list[str]:
    """The three goals of the issue on the family sets present (module docstring)."""
    def cell(d, model, nfe):
        return d["cells"].get((model, nfe, GOAL_METRIC))

    def best(d, nfe, models=MSTAR):
        found = [(c[0], c[1], m) for m in models if (c := cell(d, m, nfe))]
        return min(found) if found else None
    present = [f for f in FAMILY_SETS if f in agg]
    a_fail, b_fail, c_ok, missing = [], [], [], set()
    for f in present:
        d = agg[f]
        for nfe in (8, 16):
            star, ms = cell(d, "star-shaped", nfe), best(d, nfe)
            if not (star and ms):
                missing.add("a")
            elif not star[0] - ms[0] > max(star[1], ms[1]):
                a_fail.append(f"{f}@{nfe}")
        student, top = cell(d, "M-Star distilled", 8), best(d, 64, ("star-shaped", *MSTAR))
        if not (student and top):
            missing.add("b")
        elif student[0] > 1.1 * top[0]:  # with its teacher (the distilled row at 64): teacher gap vs distillation gap
            teacher = cell(d, "M-Star distilled", 64)
            b_fail.append(f"{f} ({student[0]:.3g} vs {top[2]} {top[0]:.3g}; its teacher {teacher[0]:.3g})" if teacher
                          else f"{f} ({student[0]:.3g} vs {top[2]} {top[0]:.3g})")
        star, ms = cell(d, "star-shaped", 64), best(d, 64)
        if not (star and ms):
            missing.add("c")
        elif ms[0] <= star[0]:
            c_ok.append(f)
    scope = f"{len(present)} of 8 family sets present, {GOAL_METRIC}"
    if not present:  # the goals are about the family sets: none here, so nothing is met or missed
        return [f"goals: not evaluated ({scope}; rows of {', '.join(sorted(agg))} only)"]

    def verdict(goal, ok, detail):
        return f"({goal}) {'n/a (rows missing)' if goal in missing else 'met' if ok else 'missed'}: {detail}"
    need_c = min(6, len(present))
    return [f"goals ({scope}):",
            verdict("a", not a_fail, "best M-Star beats star-shaped by > 1 sd at 8 and 16 NFE on every family"
                    + (f"; fails on {', '.join(a_fail)}" if a_fail else "")),
            verdict("b", not b_fail, "8-step distilled M-Star within 10 % of the best 64-NFE model"
                    + (f"; fails on {', '.join(b_fail)}" if b_fail else "")),
            verdict("c", len(c_ok) >= need_c, f"M-Star at 64 NFE no worse than star-shaped on {len(c_ok)} of "
                    f"{len(present)} families (need {need_c}{' of 8' if need_c == 6 else ''})")]


def summary(agg: dict) -> str | None:
    """One line per dataset: the goal metric of star-shaped, the better undistilled M-Star row, the
    distilled M-Star students (and their teacher at T) and the best Gaussian row, at 8, 16 and 64 NFE."""
    def fmt(d, models, nfe):
        found = sorted((c[0], c[1], m) for m in models if (c := d["cells"].get((m, nfe, GOAL_METRIC))))
        return f"{found[0][0]:.3g} ± {found[0][1]:.2g}" if found else "-"
    groups = [("star-shaped", ("star-shaped",)), ("M-Star", ("M-Star learned", "M-Star ddpm")),
              ("M-Star distilled", ("M-Star distilled",)),
              ("best Gaussian", ("Gaussian DDPM", "Gaussian DDIM", "Gaussian distilled"))]
    nfes = (8, 16, 64)
    body = [[dataset, *(fmt(d, models, n) for _, models in groups for n in nfes)] for dataset, d in agg.items()]
    body = [line for line in body if any(c != "-" for c in line[1:])]  # datasets with rows of these models
    if not body:
        return None
    headers = ["dataset", *(f"{name} @{n}" for name, _ in groups for n in nfes)]
    return (f"{GOAL_METRIC}, mean ± sd over seeds (M-Star: the better of learned and ddpm; M-Star distilled @64: "
            "its teacher)\n" + tabulate(body, headers=headers, tablefmt="github", disable_numparse=True))


def kinds_summary(agg: dict) -> str | None:
    """Per dataset, the other model kinds beside the best M-Star and Gaussian rows at every NFE (the
    goal metric, mean ± sd over seeds); None when no row of another kind is there."""
    if not any(k[0] in KINDS for d in agg.values() for k in d["cells"]):
        return None
    groups = [("best M-Star", MSTAR), ("star-shaped", ("star-shaped",)),
              ("best Gaussian", ("Gaussian DDPM", "Gaussian DDIM", "Gaussian distilled")), *((k, (k,)) for k in KINDS)]
    nfes = sorted({k[1] for d in agg.values() for k in d["cells"]})
    body = []
    for dataset, d in agg.items():
        for label, models in groups:
            cells = []
            for nfe in nfes:
                found = sorted((c[0], c[1], m) for m in models if (c := d["cells"].get((m, nfe, GOAL_METRIC))))
                cells.append("-" if not found else f"{found[0][0]:.3g} ± {found[0][1]:.2g}"
                             + (f" ({found[0][2]})" if len(models) > 1 else ""))
            if any(c != "-" for c in cells):
                body.append([dataset, label, *cells])
    return (f"model kinds beside M-Star: {GOAL_METRIC}, mean ± sd over seeds (best-of rows name the row; "
            "distilled rows at T: their teacher; consistency only up to its student's evaluations)\n"
            + tabulate(body, headers=["dataset", "row", *(f"NFE {n}" for n in nfes)], tablefmt="github",
                       disable_numparse=True))


def best_rows(agg: dict, nfes=(8, 16, 64)) -> str:
    """Per dataset, the row with the lowest mean of the goal metric at each NFE, and its margin over
    the runner-up in units of the larger seed sd (< 1: within the seed spread): the recipe choice."""
    body = []
    for dataset, d in agg.items():
        line = [dataset]
        for nfe in nfes:
            found = sorted((c[0], c[1], m) for m in MODELS if (c := d["cells"].get((m, nfe, GOAL_METRIC))))
            if not found:
                line.append("-")
                continue
            (v, sd, m), rest = found[0], found[1:]
            spread = max(sd, rest[0][1]) if rest else 0.0
            line.append(f"{m} {v:.4g} ({(rest[0][0] - v) / spread:.1f} sd)" if spread > 0 else f"{m} {v:.4g}")
        body.append(line)
    return (f"best row by mean {GOAL_METRIC} (margin over the runner-up in seed sd)\n"
            + tabulate(body, headers=["dataset", *(f"NFE {n}" for n in nfes)], tablefmt="github",
                       disable_numparse=True))


def plot(agg: dict, folder: Path) -> list[Path]:
    """quality vs NFE per dataset and metric: SVG always, PNG when matplotlib is installed."""
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for dataset, d in agg.items():
        for metric in d["metrics"]:
            series = {m: sorted((n, c[0], c[1]) for (mm, n, me), c in d["cells"].items() if mm == m and me == metric)
                      for m in MODELS}
            series = {m: p for m, p in series.items() if p}
            path = folder / f"nfe-{dataset}-{metric}"
            path.with_suffix(".svg").write_text(svg(series, d["floor"][metric], f"{dataset}: {metric}"))
            written.append(path.with_suffix(".svg"))
            try:
                import matplotlib
                matplotlib.use("Agg")
                import matplotlib.pyplot as plt
            except ImportError:
                continue
            fig, ax = plt.subplots(figsize=(6.4, 4))
            for m, p in series.items():
                ax.errorbar([q[0] for q in p], [q[1] for q in p], yerr=[q[2] for q in p], marker="o", capsize=3, label=m)
            ax.axhline(d["floor"][metric], color="grey", linestyle="--", label="noise floor")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({q[0] for p in series.values() for q in p}), [str(q) for q in sorted(
                {q[0] for p in series.values() for q in p})])
            ax.set(xlabel="network evaluations (NFE)", ylabel=metric, title=f"{dataset}: {metric}")
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(path.with_suffix(".png"), dpi=120)
            plt.close(fig)
            written.append(path.with_suffix(".png"))
    return written


def svg(series: dict, floor: float, title: str, w: int = 640, h: int = 400, pad: int = 56) -> str:
    """Line chart: log2 NFE on x, the metric on y, error bars of one sd, a dashed noise floor."""
    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2", "#7f7f7f",
               "#bcbd22", "#000000", "#aec7e8")
    xs = sorted({p[0] for s in series.values() for p in s})
    lo = min([floor] + [p[1] - p[2] for s in series.values() for p in s])
    hi = max([floor] + [p[1] + p[2] for s in series.values() for p in s])
    hi = hi if hi > lo else lo + 1
    x0, x1 = math.log2(xs[0]), max(math.log2(xs[-1]), math.log2(xs[0]) + 1)

    def px(n, v):
        return (pad + (math.log2(n) - x0) / (x1 - x0) * (w - 2 * pad - 120), h - pad - (v - lo) / (hi - lo) * (h - 2 * pad))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>', f'<text x="{w / 2}" y="18" text-anchor="middle">{title}</text>']
    fy = px(xs[0], floor)[1]
    out.append(f'<line x1="{pad}" y1="{fy:.1f}" x2="{w - pad - 120}" y2="{fy:.1f}" stroke="grey" stroke-dasharray="4"/>')
    for i, (name, pts) in enumerate(series.items()):
        c = colours[i % len(colours)]
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                   + " ".join("%.1f,%.1f" % px(n, v) for n, v, _ in pts) + '"/>')
        for n, v, sd in pts:
            (bx, by0), (_, by1) = px(n, v - sd), px(n, v + sd)
            out.append(f'<line x1="{bx:.1f}" y1="{by0:.1f}" x2="{bx:.1f}" y2="{by1:.1f}" stroke="{c}"/>')
        out.append(f'<text x="{w - pad - 110}" y="{pad + 14 * i}" fill="{c}">{name}</text>')
    out.append(f'<text x="{w - pad - 110}" y="{pad + 14 * len(series)}" fill="grey">noise floor</text>')
    for n in xs:
        out.append(f'<text x="{px(n, lo)[0]:.1f}" y="{h - pad + 16}" text-anchor="middle">{n}</text>')
    out += [f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad - 120}" y2="{h - pad}" stroke="black"/>',
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="black"/>',
            f'<text x="{(w - 120) / 2}" y="{h - 14}" text-anchor="middle">network evaluations (log2 scale)</text>',
            f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">'
            f'{title.split(": ")[-1]} ({lo:.3g} – {hi:.3g})</text>', "</svg>\n"]
    return "\n".join(out)


def report(a) -> None:
    rows = read_jsonl(a.out, warn=print)
    if not rows:
        sys.exit(f"no rows in {a.out}")
    last = rows[-1]
    rows = [r for r in rows if same_version(r, last)]
    agg = aggregate(rows)
    c = last["config"]
    print(f"{len(rows)} rows of {a.out} (engine {last.get('engine', '?')}, commit {last['commit'][:10]}, "
          f"settings {last['settings']}): every model "
          f"trained on {last['train_examples']} examples ({c['steps']} steps × batch {c['batch']}), T = {c['T']}, "
          f"{c['distill_steps']} distillation steps per stage")
    distilled = {r["model"]: r["distill"] for r in rows if "distill" in r}  # reflow, consistency: their settings
    for model, settings in distilled.items():
        print(f"{model}: trained as its network's row, then mstar distill with {' '.join(settings)}")
    print(tables(agg, a.metrics))
    if (lines := summary(agg)) is not None:
        print("\n" + lines)
    if (kinds := kinds_summary(agg)) is not None:
        print("\n" + kinds)
    print("\n" + best_rows(agg))
    print("\n" + "\n".join(goals(agg)))
    if a.plots:
        written = plot(agg, Path(a.plots))
        print(f"\n{len(written)} plots in {a.plots}")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 datasets, 3 models, 2 seeds, short training")
    p.add_argument("--report", action="store_true", help="tables, goals and plots from the JSONL alone")
    p.add_argument("--datasets", nargs="+", choices=[*DATASETS, "all"], help="default: all but " + ", ".join(HEAVY))
    p.add_argument("--models", nargs="+", choices=[*MODELS, *ALIASES], metavar="ROW",
                   help="table rows (default: the original table, " + ", ".join(map(repr, TABLE)) + "); the other "
                   "model kinds: " + ", ".join(map(repr, KINDS)) + "; groups: table, kinds, all. The consistency "
                   "row runs only where the engine distils with distill.method = consistency (checked at run time)")
    for k in ("steps", "batch", "t_per_rollout", "hidden", "blocks", "T", "distill_steps", "samples", "seeds"):
        p.add_argument("--" + k.replace("_", "-"), type=int)
    p.add_argument("--distill-lr", type=float)
    p.add_argument("--coupling-lr", type=float, help="learning rate of the learned coupling (default: the spec's)")
    p.add_argument("--distill-coupling", default="deterministic", choices=("deterministic", "model"),
                   help="sampling coupling of teacher and students (default deterministic, rho = 1)")
    p.add_argument("--reflow-to", type=int, default=1, help="rectified-flow-1: the student's evaluations (default 1)")
    p.add_argument("--reflow-rounds", type=int, default=1, help="rectified-flow-1: reflow rounds (default 1)")
    p.add_argument("--reflow-steps", type=int, help="rectified-flow-1: optimiser steps per round (default: the "
                   "progressive chain's log2(T) x --distill-steps, shared out over the rounds)")
    p.add_argument("--reflow-lr", type=float, help="rectified-flow-1: learning rate (default --distill-lr)")
    p.add_argument("--reflow-teacher-steps", type=int, default=64,
                   help="rectified-flow-1: Euler steps of the teacher's ODE per pair (default 64)")
    p.add_argument("--reflow-pairs", type=int, help="rectified-flow-1: pairs per round (default: the training set's "
                   "size)")
    p.add_argument("--consistency-to", type=int, help="consistency: the student's evaluations (default min(8, T); "
                   "the row is evaluated at every --nfe up to it)")
    p.add_argument("--consistency-steps", type=int, help="consistency: optimiser steps (default: the progressive "
                   "chain's log2(T) x --distill-steps)")
    p.add_argument("--consistency-lr", type=float, help="consistency: learning rate (default --distill-lr)")
    p.add_argument("--consistency-teacher-steps", type=int,
                   help="consistency: the teacher's grid N (default min(16, T))")
    p.add_argument("--consistency-weight", default="uniform", choices=CONSISTENCY_WEIGHTS,
                   help="consistency: loss weight of the grid intervals (distill.consistency_weight; default uniform)")
    p.add_argument("--nfe", type=int, nargs="+")
    p.add_argument("--metrics", nargs="+", help="metrics to print (default: all)")
    p.add_argument("--skip-gaussian-categorical", action="store_true", help="no Gaussian rows on categorical data")
    p.add_argument("--jobs", type=int, default=2, help="trained networks in parallel, one process each (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1: more only spin on "
                   "these small tensors, and oversubscribed cores slow every job down several-fold)")
    p.add_argument("--out", type=Path, help="JSONL (default benchmarks/results/nfe.jsonl, nfe-quick.jsonl with --quick)")
    p.add_argument("--workdir", type=Path, help="run directories (default runs/nfe/<settings>)")
    p.add_argument("--plots", default=None, help="plot folder (default benchmarks/results/nfe-plots; '' for none)")
    a = p.parse_args(argv)
    for k, v in {**DEFAULTS, **(QUICK if a.quick else {})}.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    a.datasets = list(DATASETS) if "all" in a.datasets else a.datasets
    a.models = list(dict.fromkeys(m for name in a.models for m in ALIASES.get(name, [name])))
    a.nfe = sorted(set(a.nfe))
    a.out = a.out or ROOT / "benchmarks" / "results" / ("nfe-quick.jsonl" if a.quick else "nfe.jsonl")
    a.plots = ROOT / "benchmarks" / "results" / "nfe-plots" if a.plots is None else a.plots
    bad = [n for n in a.nfe if not (1 <= n <= a.T and (a.T // n) * n == a.T and (a.T // n) & (a.T // n - 1) == 0)]
    if bad:
        p.error(f"NFE {bad}: each must be T = {a.T} divided by a power of two (the distillation stages)")
    for k in ("reflow_to", "consistency_to", "reflow_teacher_steps", "reflow_rounds"):
        if getattr(a, k) is not None and (getattr(a, k) < 1 or (k.endswith("_to") and getattr(a, k) > a.T)):
            p.error(f"--{k.replace('_', '-')} {getattr(a, k)}: must be at least 1" + (f" and at most T = {a.T}"
                                                                                     if k.endswith("_to") else ""))
    return a


def main(argv=None) -> None:
    a = parse(argv)
    if not a.report:
        torch.set_num_threads(a.threads)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        run_table(a)
    report(a)


if __name__ == "__main__":
    main()
