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

import attrs
import numpy as np
import torch

from mstar_engine.data.catalog import DATASETS
from mstar_engine.devices import autocast, training_device
from mstar_engine.distributed.group import SINGLE, Group
from mstar_engine.networks import build_mlp_denoiser
from mstar_engine.networks.denoiser import build_unet_denoiser
from mstar_engine.process.build import DiffusionProcess, build_process
from mstar_engine.process.normalise import TailNorm
from mstar_engine.sampling import sample, step_grid
from mstar_engine.schedules import LearnedCoupling
from mstar_engine.spec import SpecError, load_spec
from mstar_engine.spec.schema import Spec
from mstar_engine.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint

SAMPLE_SUFFIXES = (".npz", ".pt", ".npy")


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
        grid = step_grid(family.steps, steps or self.steps or family.steps)
        device = next(self.denoiser.parameters()).device
        classes = int(getattr(self.denoiser.backbone, "num_classes", 0))
        if label is not None and not 0 <= label < classes:
            raise ValueError(f"class {label} does not exist: the model is conditional on {classes} classes "
                             f"(0..{classes - 1})" if classes else "the model is not class conditional: "
                             "train it with network.class_conditional = true to sample a class")
        out = []
        with torch.no_grad():
            for j, start in enumerate(range(0, n, batch_size)):
                if j % group.world != group.rank:
                    continue
                b = min(batch_size, n - start)
                generator = torch.Generator(device=device).manual_seed(batch_seed(seed, j))
                labels = None
                if classes:  # one class per sample: the requested one, else uniformly drawn
                    labels = torch.full((b,), label, dtype=torch.long, device=device) if label is not None else \
                        torch.randint(0, classes, (b,), generator=generator, device=device)

                def net(s, x, t, labels=labels):
                    with autocast(precision, device):
                        if labels is None:
                            return self.denoiser(s, x, t)
                        return self.denoiser(s, x, t, labels.to(x.device), guidance=guidance)
                out.append(sample(net, family, b, grid, self.sampling_rho(), generator=generator,
                                  device=device, dtype=torch.float64, final=final).cpu())
        if group.world > 1:  # batch j came from process j mod world: put them back in order
            mine = group.gather(out)
            out = [mine[j % group.world][j // group.world] for j in range(sum(len(m) for m in mine))]
        return torch.cat(out) if out else torch.empty((0, *family.event_shape), dtype=torch.float64)


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
                       processes: int | None = None, group: Group | None = None) -> tuple[Path, tuple[int, ...]] | None:
        """``mstar sample``: draw ``n`` samples and write them to ``target`` (a ``.png`` grid, or
        arrays by the suffix); returns the path and the shape of one sample. ``processes`` > 1 (or
        torchrun) shares the batches out over that many processes; the samples do not change."""
        from mstar_engine.distributed.env import process_count, resolve_backend
        world = process_count(processes, 1)
        if group is None and world > 1:
            from mstar_engine.distributed.launch import run_processes
            device = next(self.model.denoiser.parameters()).device.type
            return run_processes(_sample_checkpoint, world, resolve_backend(self.spec.devices.backend, device),
                                 str(self.path), str(self.checkpoint), str(target), n, steps,
                                 {"seed": seed, "label": label, "guidance": guidance, "precision": precision})
        group = group or SINGLE
        x = self.sample(n, steps, seed=seed, label=label, guidance=guidance, precision=precision, group=group)
        if not group.main:
            return None
        target = str(target)
        path = save_grid(target, x, self.spec.data.range) if target.endswith(".png") else save_samples(target, x)
        return path, tuple(x.shape[1:])


def _sample_checkpoint(path: str, checkpoint: str, target: str, n: int, steps: int | None, options: dict, *,
                       group: Group) -> tuple[Path, tuple[int, ...]] | None:
    """:meth:`Run.sample_to_file` in one process of a multi-process launch (the run loaded here)."""
    return load_run(path, checkpoint).sample_to_file(target, n, steps, **options, group=group)


def save_samples(path: str | Path, samples: torch.Tensor) -> Path:
    """Write samples as ``.npz`` (key ``samples``), ``.npy`` or ``.pt``, chosen by the suffix."""
    path = Path(path)
    if path.suffix not in SAMPLE_SUFFIXES:
        raise ValueError(f"cannot write samples to {path}: the file name must end in "
                         f"{', '.join(SAMPLE_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pt":
        torch.save(samples.cpu(), path)
    elif path.suffix == ".npy":
        np.save(path, samples.cpu().numpy())
    else:
        np.savez_compressed(path, samples=samples.cpu().numpy())
    return path


def save_grid(path: str | Path, images: torch.Tensor, data_range: str = "symmetric", nrow: int | None = None,
              limit: int = 64) -> Path:
    """The first ``limit`` images as one PNG grid (torchvision ``save_image``); ``data_range`` is
    the spec's ``data.range`` (symmetric [-1, 1] or unit (0, 1))."""
    from torchvision.utils import save_image
    x = images[:limit].detach().float().cpu()
    if data_range == "symmetric":
        x = (x + 1) / 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(x.clamp(0, 1), path, nrow=nrow or max(1, int(math.sqrt(x.shape[0]))))
    return path


def build_denoiser(spec: Spec, process: DiffusionProcess, norm: TailNorm | None = None,
                   num_classes: int = 0) -> torch.nn.Module:
    """An untrained denoiser for a resolved spec: the MLP or the U-Net (``network.kind``), class
    conditional when ``num_classes > 0``. ``norm`` None: placeholder statistics, to be replaced by
    a checkpoint's buffers."""
    T = process.family.steps
    norm = norm or TailNorm(torch.zeros(T + 1, dtype=torch.float64), torch.ones(T + 1, dtype=torch.float64))
    if spec.network.kind == "unet":
        return build_unet_denoiser(process.family, norm, process.inputs, spec.network, num_classes)
    return build_mlp_denoiser(process.family, norm, process.inputs, spec.network.mlp, spec.network.dropout,
                              num_classes)


def load_run(path: str | Path, checkpoint: str | Path | None = None, device: str | torch.device = "auto") -> Run:
    """Load a run directory written by ``mstar run`` (or one of its checkpoints) onto ``device``
    (auto: a GPU when one is visible, else the CPU)."""
    path = Path(path)
    resolved = path / "spec.resolved.toml"
    if not resolved.is_file():
        raise RunError(f"{path} is not a run directory: {resolved.name} is missing. Give the folder that "
                       "mstar run printed as 'run directory' (output_dir/name)")
    try:
        spec = load_spec(resolved, semantic=False).spec
    except SpecError as exc:
        raise RunError(f"{resolved} cannot be read: {exc}") from None
    if checkpoint is not None and Path(checkpoint).is_dir():  # a checkpoint folder: its latest file
        checkpoint = latest_checkpoint(checkpoint) or Path(checkpoint) / "latest"
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(path / "checkpoints" / "train")
    if ckpt is None:
        raise RunError(f"{path} has no training checkpoint yet (checkpoints/train/latest is missing); "
                       "run mstar run on its spec first")
    try:
        state = load_checkpoint(ckpt)
    except CheckpointError as exc:
        raise RunError(str(exc)) from None
    event_shape = tuple(int(n) for n in state["event_shape"]) if "event_shape" in state else \
        DATASETS[spec.data.name].event_shape(spec.data.dim, spec.data.image_size)
    process = build_process(spec.process, event_shape)
    student = "sampling_rho" in state  # a distilled student: its own weights (no EMA) and coupling
    model = Model(process, build_denoiser(spec, process, num_classes=int(state.get("num_classes", 0))),
                  rho=state["sampling_rho"] if student else None,
                  steps=int(state["evaluations"]) if student else None)
    model.denoiser.load_state_dict(state["model"] if student else state["ema"])
    model.denoiser.eval().to(training_device(device) if isinstance(device, str) else device)
    if isinstance(model.process.coupling, LearnedCoupling):
        model.process.coupling.load_state_dict(state["coupling"])
    return Run(path, spec, model, ckpt, int(state["step"]))


def load_students(path: str | Path, device: str | torch.device = "auto") -> dict[int, Model]:
    """The distilled students of a run (``checkpoints/distill-N``, completed stages only), by their
    number of network evaluations."""
    out = {}
    for folder in sorted(Path(path, "checkpoints").glob("distill-*")):
        ckpt = latest_checkpoint(folder)
        if ckpt is None:
            continue
        state = load_checkpoint(ckpt)
        if state.get("complete"):
            out[int(state["evaluations"])] = load_run(path, ckpt, device).model
    return dict(sorted(out.items(), reverse=True))
