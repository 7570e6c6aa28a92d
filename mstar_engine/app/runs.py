"""Trained runs as Python objects: load a run directory, draw samples.

    >>> from mstar_engine import load_run, save_samples
    >>> run = load_run("runs/quickstart")
    >>> x = run.sample(1000, steps=16, seed=0)        # (1000, *event_shape), in the family's domain
    >>> save_samples("samples.npz", x)

A run is rebuilt from its ``spec.resolved.toml`` and a training checkpoint (the ``latest`` one by
default): the EMA weights (with the tail normalisation stored as buffers) and, for a learned
coupling, its ρ_t. Nothing is re-estimated, so samples depend only on the checkpoint, the seed and
the batch size (one generator runs through the batches; the default is the run's
``sample.batch_size``, the one ``mstar sample`` uses).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import attrs
import numpy as np
import torch

from mstar_engine.data.catalog import DATASETS
from mstar_engine.distill.consistency import ConsistencyFunction
from mstar_engine.util.devices import autocast, training_device
from mstar_engine.distributed.env import process_count, resolve_backend
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.distributed.launch import launch, log_to_stderr
from mstar_engine.app.model import build_denoiser, build_process
from mstar_engine.process.build import DiffusionProcess
from mstar_engine.util.atomic import atomic_write
from mstar_engine.rundir.files import OutputError, check_output
from mstar_engine.spec import SpecError, load_spec
from mstar_engine.spec.schema import Spec
from mstar_engine.train.checkpoint import CheckpointError, checkpoint_files, find_checkpoint, load_checkpoint

SAMPLE_SUFFIXES = (".npz", ".pt", ".npy")


class NonFiniteSamples(RuntimeError):
    """Sampling gave NaN or infinite values; nothing is written or reported from them."""


class RunError(RuntimeError):
    """A run directory that cannot be used; the message says what is missing and how to fix it."""


@attrs.frozen
class Model:
    """What sampling needs: the process and the (EMA) denoiser."""

    process: DiffusionProcess
    denoiser: torch.nn.Module
    rho: torch.Tensor | None = None     # sampling coupling ρ_t when not the process's (distilled students)
    steps: int | None = None            # default network evaluations (a student's), else T

    def sampling_rho(self) -> torch.Tensor:
        return self.rho if self.rho is not None else self.process.rho()

    def sample(self, n: int, steps: int | None = None, *, seed: int = 0, batch_size: int = 1000,
               final: str = "x0", label: int | None = None, guidance: float = 1.0, precision: str = "fp32",
               group: Group = SINGLE) -> torch.Tensor:
        """``n`` samples with ``steps`` network evaluations (T when None; the block rule below T).
        A class-conditional model samples class ``label`` (default: a uniformly drawn class per
        sample) with classifier-free guidance scale ``guidance`` (1: the conditional model). The
        network runs under autocast at ``precision`` (fp32, bf16, fp16); the chain in float64.

        Batch j of ``batch_size`` samples draws from its own generator (seeded by ``seed`` and j),
        so with several processes (``group``) the batches are shared out round robin and gathered:
        every process returns the same ``n`` samples as one process would."""
        family = self.process.family
        evaluations = steps or self.steps or family.steps
        device = next(self.denoiser.parameters()).device
        classes = int(getattr(self.denoiser.backbone, "num_classes", 0))
        if label is not None and not 0 <= label < classes:
            raise ValueError(f"class {label} does not exist: the model is conditional on {classes} classes "
                             f"(0..{classes - 1})" if classes else "the model is not class conditional: "
                             "train it with network.class_conditional = true to sample a class")

        def draw(start: int, b: int, generator: torch.Generator) -> torch.Tensor:
            labels = None
            if classes:  # one class per sample: the requested one, else uniformly drawn
                labels = torch.full((b,), label, dtype=torch.long, device=device) if label is not None else \
                    torch.randint(0, classes, (b,), generator=generator, device=device)

            def net(*inputs, labels=labels):
                with autocast(precision, device):
                    if labels is None:
                        return self.denoiser(*inputs)
                    return self.denoiser(*inputs, labels=labels.to(device), guidance=guidance)
            return self.process.sample_batch(net, b, evaluations, self.sampling_rho(), generator, device, final).cpu()
        with torch.no_grad():
            out = in_batches(n, batch_size, seed, device, group, draw)
        x = torch.cat(out) if out else torch.empty((0, *family.event_shape), dtype=torch.float64)
        bad = int((~torch.isfinite(x.flatten(1))).any(1).sum()) if x.numel() else 0
        if bad:
            raise NonFiniteSamples(f"{bad} of {x.shape[0]} samples ({evaluations} network evaluations) hold NaN or "
                                   "infinite values: the model diverged although its weights are finite. Sample an "
                                   "earlier checkpoint (--checkpoint), or retrain with a lower train.lr")
        return x


def sampling_rho(process: DiffusionProcess, coupling: str) -> torch.Tensor:
    """ρ_t of a chain under ``coupling``: 1 everywhere (deterministic) or the trained coupling (model)."""
    if coupling == "deterministic":
        return torch.ones(process.family.steps + 1, dtype=torch.float64)
    if coupling == "model":
        return process.rho().to(torch.float64)
    raise ValueError(f"the sampling coupling must be deterministic or model, got {coupling!r}")


def sample_rho(spec: Spec, process: DiffusionProcess) -> torch.Tensor | None:
    """The ρ_t ``sample.coupling`` fixes for a trained model: ρ = 1 (deterministic), or None, so that
    the model samples with the process's own (possibly learned) ρ_t."""
    return sampling_rho(process, "deterministic") if spec.sample.coupling == "deterministic" else None


def in_batches(n: int, batch_size: int, seed: int, device: torch.device, group: Group,
               draw: Callable[[int, int, torch.Generator], torch.Tensor]) -> list[torch.Tensor]:
    """``draw(start, size, generator)`` for every batch of ``n`` items, batch j with its own
    generator (:func:`batch_seed`); with several processes the batches are shared out round robin
    and gathered, so every process returns the single-process list."""
    out = []
    for j, start in enumerate(range(0, n, batch_size)):
        if j % group.world == group.rank:
            out.append(draw(start, min(batch_size, n - start),
                            torch.Generator(device=device).manual_seed(batch_seed(seed, j))))
    if group.world > 1:  # batch j came from process j mod world: put them back in order
        mine = group.gather(out)
        out = [mine[j % group.world][j // group.world] for j in range(sum(len(m) for m in mine))]
    return out


def batch_seed(seed: int, batch: int) -> int:
    """The seed of sampling batch ``batch`` (batch 0 uses ``seed`` itself)."""
    return int(seed) if batch == 0 else (int(seed) * 1_000_003 + 7_919 * batch) % 2**63


@attrs.frozen
class Run:
    """A trained run: its resolved spec, the model at ``checkpoint`` and the optimiser step."""

    path: Path
    spec: Spec
    model: Model
    checkpoint: Path
    step: int

    def sample(self, n: int, steps: int | None = None, *, seed: int = 0, batch_size: int | None = None,
               final: str | None = None, label: int | None = None, guidance: float | None = None,
               precision: str | None = None, group: Group = SINGLE) -> torch.Tensor:
        """``n`` samples with ``steps`` network evaluations (default: the run's ``sample.steps``),
        of class ``label`` with guidance scale ``guidance``, the network at ``precision``
        (defaults: ``sample.class_label``, ``sample.guidance``, ``sample.precision``). The samples
        are a function of the checkpoint, ``seed``, ``precision`` and ``batch_size`` (default: the
        run's ``sample.batch_size``, as ``mstar sample`` uses)."""
        cfg = self.spec.sample
        return self.model.sample(n, steps or self.model.steps or cfg.steps, seed=seed,
                                 batch_size=batch_size or cfg.batch_size, final=final or cfg.final,
                                 label=cfg.class_label if label is None else label,
                                 guidance=cfg.guidance if guidance is None else guidance,
                                 precision=precision or cfg.precision, group=group)

    def sample_to_file(self, target: str | Path, n: int, steps: int | None = None, *, seed: int = 0,
                       label: int | None = None, guidance: float | None = None, precision: str | None = None,
                       processes: int | None = None) -> tuple[Path, tuple[int, ...]] | None:
        """``mstar sample``: draw ``n`` samples and write them to ``target`` (a ``.png`` grid, or
        arrays by the suffix); returns the path and the shape of one sample. ``processes`` > 1 (or
        torchrun) shares the batches out over that many processes; the samples do not change."""
        check_output(target)  # before sampling: a path that cannot take the samples fails at once
        device = next(self.model.denoiser.parameters()).device.type
        options = {"seed": seed, "label": label, "guidance": guidance, "precision": precision}
        return launch(_sample_to_file, process_count(processes, 1), resolve_backend(self.spec.devices.backend, device),
                      self, str(target), n, steps, options)

    def __reduce__(self):
        """The processes of a launch load the run from its files (not its tensors through a pipe)."""
        return load_run, (str(self.path), str(self.checkpoint))


def _sample_to_file(run: Run, target: str, n: int, steps: int | None, options: dict, *,
                    group: Group) -> tuple[Path, tuple[int, ...]] | None:
    x = run.sample(n, steps, **options, group=group)
    if not group.main:
        return None
    path = save_grid(target, x, run.spec.data.range) if target.endswith(".png") else save_samples(target, x)
    return path, tuple(x.shape[1:])


def save_samples(path: str | Path, samples: torch.Tensor) -> Path:
    """Write samples as ``.npz`` (key ``samples``), ``.npy`` or ``.pt``, chosen by the suffix,
    atomically; :class:`~mstar_engine.rundir.files.OutputError` when the file would replace a run's
    own files or cannot be written (a read-only folder, a full disk)."""
    path = check_output(path)
    if path.suffix not in SAMPLE_SUFFIXES:
        raise OutputError(f"cannot write samples to {path}: the file name must end in "
                          f"{', '.join(SAMPLE_SUFFIXES)}")
    x = samples.detach().cpu()
    if path.suffix == ".pt":
        write = lambda fh: torch.save(x, fh)  # noqa: E731
    elif path.suffix == ".npy":
        write = lambda fh: np.save(fh, x.numpy())  # noqa: E731
    else:
        write = lambda fh: np.savez_compressed(fh, samples=x.numpy())  # noqa: E731
    return _write_output(path, write)


def save_grid(path: str | Path, images: torch.Tensor, data_range: str = "symmetric", nrow: int | None = None,
              limit: int = 64) -> Path:
    """The first ``limit`` images as one PNG grid (torchvision ``save_image``), written atomically;
    ``data_range`` is the spec's ``data.range`` (symmetric [-1, 1] or unit (0, 1))."""
    from torchvision.utils import save_image
    x = images[:limit].detach().float().cpu()
    if data_range == "symmetric":
        x = (x + 1) / 2
    path = check_output(path)
    return _write_output(path, lambda fh: save_image(x.clamp(0, 1), fh, format="png",
                                                     nrow=nrow or max(1, int(math.sqrt(x.shape[0])))))


def _write_output(path: Path, write: Callable) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write, shared=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}; choose another --out (a folder you can "
                          "write to, on a disk with space)") from None
    return path


def load_run(path: str | Path, checkpoint: str | Path | None = None, device: str | torch.device = "auto",
             warn: Callable[[str], None] | None = None) -> Run:
    """Load a run directory written by ``mstar run`` (or one of its checkpoints, or a checkpoint
    folder such as ``checkpoints/distill-8``) onto ``device`` (auto: a GPU when one is visible,
    else the CPU). Without ``checkpoint``, the newest training checkpoint that loads and holds
    finite weights; each newer one skipped is named through ``warn`` (default: standard error)."""
    path = Path(path)
    warn = warn or log_to_stderr
    spec = _run_spec(path)
    folder = Path(checkpoint) if checkpoint is not None and Path(checkpoint).is_dir() else \
        (path / "checkpoints" / "train" if checkpoint is None else None)
    try:
        if folder is not None:
            found = find_checkpoint(folder, warn=warn)
            if found is None:
                what = "no usable checkpoint (every step-*.pt was skipped, see the warnings above)" if \
                    checkpoint_files(folder) else "no training checkpoint yet (no step-*.pt file)"
                raise RunError(f"{folder} holds {what}; " + ("run mstar run on the run's spec to train it"
                                                             if checkpoint is None else "give another checkpoint"))
            ckpt, state = found
        else:
            ckpt, state = Path(checkpoint), load_checkpoint(checkpoint)
    except CheckpointError as exc:
        raise RunError(f"cannot use checkpoint {exc}") from None
    return _build(path, spec, ckpt, state, device)


def _run_spec(path: Path) -> Spec:
    """The resolved spec of the run directory ``path``; :class:`RunError` when it is not one."""
    resolved = path / "spec.resolved.toml"
    if not resolved.is_file():
        raise RunError(f"{path} is not a run directory: {resolved.name} is missing. Give the folder that "
                       "mstar run printed as 'run directory' (output_dir/name)")
    try:
        return load_spec(resolved, semantic=False).spec
    except SpecError as exc:
        raise RunError(f"{resolved} cannot be read: {exc}") from None


def _build(path: Path, spec: Spec, ckpt: Path, state: dict, device: str | torch.device) -> Run:
    """The run of ``spec`` with the weights of the checkpoint ``state``; :class:`RunError` when the
    checkpoint does not fit the spec (missing entries, other shapes)."""
    student = "sampling_rho" in state  # a distilled student: its own weights (no EMA) and coupling
    needed = ["model", "evaluations"] if student else ["ema", "step"]
    missing = [k for k in needed if k not in state]
    if missing:
        raise RunError(f"{ckpt} is not a checkpoint of an mstar run: it lacks {', '.join(map(repr, missing))}")
    event_shape = tuple(int(n) for n in state["event_shape"]) if "event_shape" in state else \
        DATASETS[spec.data.name].event_shape(spec.data.dim, spec.data.image_size)
    process = build_process(spec.process, event_shape)
    denoiser = build_denoiser(spec, process, num_classes=int(state.get("num_classes", 0)))
    try:  # a reflow student has EMA weights, a consistency student its target network
        denoiser.load_state_dict(state["target"] if state.get("consistency") else
                                 state["ema"] if "ema" in state else state["model"])
        if process.learned is not None:
            process.learned.load_state_dict(state["coupling"])
    except (RuntimeError, KeyError, TypeError) as exc:
        first = [line.strip() for line in str(exc).splitlines() if line.strip()][1:2] or [str(exc)]
        raise RunError(f"{ckpt} does not fit the run's spec {path / 'spec.resolved.toml'} ({first[0]}); it was "
                       "written by another spec (a changed network?). Give the checkpoint's own run directory") from None
    if state.get("consistency"):
        denoiser = ConsistencyFunction(denoiser, process.family, float(state.get("sigma_data", 0.5)))
    model = Model(process, denoiser, rho=state["sampling_rho"] if student else sample_rho(spec, process),
                  steps=int(state["evaluations"]) if student else None)
    model.denoiser.eval().to(training_device(device) if isinstance(device, str) else device)
    return Run(path, spec, model, ckpt, int(state["step"]))


def load_students(path: str | Path, device: str | torch.device = "auto",
                  warn: Callable[[str], None] | None = None) -> dict[int, Model]:
    """The distilled students of a run (``checkpoints/distill-N``, ``consistency-N``, ``reflow-r``;
    completed stages only), by their number of network evaluations."""
    path, out, spec = Path(path), {}, None
    folders = [*sorted(path.glob("checkpoints/distill-*")), *sorted(path.glob("checkpoints/consistency-*")),
               *sorted(path.glob("checkpoints/reflow-*"))]  # the last reflow round is the student
    for folder in folders:
        found = find_checkpoint(folder, warn=warn or log_to_stderr)
        if found is not None and found[1].get("complete"):  # each checkpoint read once, the spec once
            spec = spec or _run_spec(path)
            out[int(found[1]["evaluations"])] = _build(path, spec, *found, device).model
    return dict(sorted(out.items(), reverse=True))
