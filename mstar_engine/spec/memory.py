"""How much memory a spec needs, estimated from its sizes before anything is allocated.

``mstar validate``, ``mstar plan`` and ``mstar run`` compare the estimate with the memory of the
device the spec runs on (:func:`memory_issue`, an "environment" issue: a spec too large for this
machine may fit another), so that a size that cannot be allocated is refused with both figures
instead of hanging or crashing the run. Everything is arithmetic on the spec's numbers: no
network is built, so absurd sizes cost nothing to estimate.

The estimate of one process, in bytes (a rough upper figure, not a measurement):

* training state: parameters × 4 bytes × (weights, EMA copy, gradient, two Adam moments);
* activations kept for the backward pass by one micro-batch of
  ``batch_size / processes / accumulation × t_per_rollout`` examples: an MLP keeps a few
  hidden-sized vectors per layer; a U-Net the feature maps of each block at its resolution
  (plus, on the CPU, the attention matrices heads × (H·W)²), or only the blocks' inputs under
  ``train.activation_checkpointing``; 2 bytes a value under bf16/fp16 autocast, else 4;
* the forward roll-outs of one block of :data:`ROLLOUT_BLOCK` batches: x0, and x_t and s_t for
  every kept step, in float64 (as ``train/inputs.py`` builds them), and the loss's float64 terms;
* distillation (with ``[distill]``): the student's weights, gradient and Adam moments, the
  teacher's weights and one batch's activations;
* sampling: one sampling batch's chain (float64) and network pass;
* on the host, once per process: the dataset (float64 examples, float32 images) and the samples
  kept for evaluation.

The parameter counts are exact: a test builds each network and compares.
"""
from __future__ import annotations

import math
import os

import attrs
import torch

from mstar_engine.data.catalog import DATASETS
from mstar_engine.families import get as get_family
from mstar_engine.networks.mlp import mlp_parameter_count
from mstar_engine.networks.unet import UNET_PRESETS
from mstar_engine.networks.vae import vae_size
from mstar_engine.spec.resolve import resolve
from mstar_engine.spec.schema import Spec

GiB = 2**30
#: Batches whose roll-outs are simulated together (``mstar_engine.train.inputs.ROLLOUT_BLOCK``,
#: kept equal by a test).
ROLLOUT_BLOCK = 16
#: Classes assumed for a class-conditional network on an image folder (counted at run time).
UNKNOWN_CLASSES = 1000


@attrs.frozen
class FamilyShapes:
    """Per-example shapes of a family (its ``event_shape``, ``stat_shape``, ``norm_shape``, ``raw_shape``)."""
    event: tuple[int, ...]
    stat: tuple[int, ...]
    norm: tuple[int, ...]
    raw: tuple[int, ...]


def family_shapes(family: str, event: tuple[int, ...]) -> FamilyShapes:
    """The shapes of ``family`` (a registry name) for examples of shape ``event``, without
    building the family: its shape properties read the event shape only."""
    shell = object.__new__(get_family(family))
    shell.event_shape = tuple(int(n) for n in event)
    return FamilyShapes(shell.event_shape, shell.stat_shape, shell.norm_shape, shell.raw_shape)


@attrs.frozen
class NetworkSize:
    parameters: int
    train_values: int      # activation values kept per example for the backward pass
    forward_values: int    # values alive per example in a forward pass without gradients


def mlp_size(in_features: int, out_features: int, hidden: int, blocks: int, time_dim: int,
             num_classes: int = 0) -> NetworkSize:
    """:class:`~mstar_engine.networks.mlp.MLP`: exact parameters, activations per example."""
    params = mlp_parameter_count(in_features, out_features, hidden, blocks, time_dim, num_classes)
    # the input, the encoder's linear and SiLU outputs, per block linear, SiLU, dropout and sum, the output
    train = in_features + time_dim + hidden * (2 + 4 * blocks) + out_features
    return NetworkSize(params, train, in_features + time_dim + 3 * hidden + out_features)


def _group_norm(c: int) -> int:
    return 2 * c


def _res_block(cin: int, cout: int, emb: int, scale_shift: bool) -> int:
    k = 2 if scale_shift else 1
    params = _group_norm(cin) + 9 * cin * cout + cout + emb * k * cout + k * cout + _group_norm(cout)
    params += 9 * cout * cout + cout
    if cin != cout:
        params += cin * cout + cout
    return params


def _attention(c: int) -> int:
    return _group_norm(c) + 3 * c * c + 3 * c + c * c + c


def unet_size(in_channels: int, out_channels: int, image_size: int, channels: int, channel_mult, res_blocks: int,
              attention_resolutions, head_channels: int, scale_shift: bool = False, num_classes: int = 0,
              attention_matrices: bool = True, checkpointing: bool = False) -> NetworkSize:
    """:class:`~mstar_engine.networks.unet.UNet` (the same walk over levels as its constructor):
    exact parameters; activations per example from each block's channels and resolution.
    ``attention_matrices``: count the (H·W)² attention weights per head that the CPU's attention
    keeps for the backward pass (fused GPU kernels do not)."""
    mult = [int(m) for m in channel_mult]
    attention = {int(r) for r in attention_resolutions}
    C, emb = channels, 4 * channels
    params = channels * emb + emb + emb * emb + emb                     # time MLP (time_dim = channels)
    if num_classes > 0:
        params += (num_classes + 1) * emb
    params += 9 * in_channels * C + C                                   # conv_in
    # per kind of block: (values kept for the backward pass, values of its input, values alive at
    # once in a forward pass without gradients, per example; how many such blocks). Repeated
    # blocks are counted, not walked: res_blocks may be as large as a spec allows.
    blocks: list[tuple[int, int, int, int]] = []
    stem = (in_channels + C) * image_size ** 2
    skips_values = C * image_size ** 2
    R = res_blocks

    def res(cin: int, cout: int, r: int, times: int = 1) -> None:
        nonlocal params
        if times > 0:
            params += times * _res_block(cin, cout, emb, scale_shift)
            blocks.append(((3 * cin + 6 * cout) * r * r, cin * r * r, (cin + 2 * cout) * r * r, times))

    def attn(c: int, r: int, times: int = 1) -> None:
        nonlocal params
        params += times * _attention(c)
        weights = max(1, c // head_channels) * (r * r) ** 2 if attention_matrices else 0
        blocks.append((7 * c * r * r + weights, c * r * r, 5 * c * r * r + weights, times))

    skips: list[list[int]] = [[C, 1]]  # channels of the skip connections, run-length: [channels, count]

    def pop(n: int) -> list[tuple[int, int]]:
        """The last ``n`` skips, as (channels, count) runs in the order the up path takes them."""
        out = []
        while n > 0:
            value, count = skips[-1]
            take = min(n, count)
            out.append((value, take))
            n -= take
            if take == count:
                skips.pop()
            else:
                skips[-1][1] -= take
        return out

    c = C
    for i, m in enumerate(mult):
        r = image_size >> i
        res(c, C * m, r)
        res(C * m, C * m, r, R - 1)
        c = C * m
        if r in attention:
            attn(c, r, R)
        skips.append([c, R])
        skips_values += R * c * r * r
        if i < len(mult) - 1:
            params += 9 * c * c + c                                     # Downsample
            blocks.append((c * r * r, c * r * r, c * r * r + c * (r // 2) ** 2, 1))
            skips.append([c, 1])
            skips_values += c * (r // 2) ** 2
    lowest = image_size >> (len(mult) - 1)
    res(c, c, lowest, 2)
    attn(c, lowest)
    for i, m in reversed(list(enumerate(mult))):
        r = image_size >> i
        taken = pop(R + 1)  # R + 1 blocks, each on the concatenation of h and one skip
        first, rest = taken[0], taken[1:]
        res(c + first[0], C * m, r)
        if first[1] > 1:
            res(C * m + first[0], C * m, r, first[1] - 1)
        for value, count in rest:
            res(C * m + value, C * m, r, count)
        c = C * m
        if r in attention:
            attn(c, r, R + 1)
        if i > 0:
            params += 9 * c * c + c                                     # Upsample
            blocks.append((c * (2 * r) ** 2 + c * r * r, c * r * r, 2 * c * (2 * r) ** 2 + c * r * r, 1))
    params += _group_norm(c) + 9 * c * out_channels + out_channels       # out
    tail = (3 * c + out_channels) * image_size ** 2
    kept = sum(k * n for k, _, _, n in blocks)
    if checkpointing:  # only each block's input is kept; one block is recomputed at a time
        kept = sum(i * n for _, i, _, n in blocks) + max(k for k, _, _, _ in blocks)
    return NetworkSize(params, stem + kept + tail, stem + skips_values + max(t for _, _, t, _ in blocks) + tail)


def _event(spec: Spec) -> tuple[int, ...]:
    """The example shape of the spec's data; a user's file (shape known once loaded) counts as
    small examples of the family's smallest shape."""
    event = DATASETS[spec.data.name].event_shape(spec.data.dim, spec.data.image_size)
    if event:
        return event
    return {"wishart": (2, 2), "categorical": (1, 2)}.get(spec.process.family, (1,))


def network_size(spec: Spec, accelerator: str = "cpu") -> NetworkSize:
    """The size of the denoiser of a resolved ``spec`` (``network.kind`` not ``auto``), or of the VAE's."""
    info, event, vae = DATASETS[spec.data.name], _event(spec), spec.process.vae
    if spec.process.kind == "vae":  # its own encoder and decoder: [network] does not apply
        return NetworkSize(*vae_size(event, vae.latent_channels, vae.channels))
    shapes = family_shapes(spec.process.family, event)
    inputs, net = spec.process.inputs, spec.network
    classes = (info.num_classes if info.num_classes > 0 else UNKNOWN_CLASSES) if net.class_conditional else 0
    if net.kind == "unet":
        cfg = {"channels": net.unet.channels, "channel_mult": net.unet.channel_mult, "res_blocks": net.unet.res_blocks,
               "attention_resolutions": net.unet.attention_resolutions, "head_channels": net.unet.head_channels,
               "scale_shift": False}
        if net.preset is not None:
            cfg.update({k: UNET_PRESETS[net.preset][k] for k in cfg})
        in_channels = (shapes.norm[0] if "tail" in inputs else 0) + (shapes.event[0] if "state" in inputs else 0)
        return unet_size(in_channels, shapes.raw[0], event[-1], num_classes=classes,
                         attention_matrices=accelerator != "cuda",
                         checkpointing=spec.train.activation_checkpointing, **cfg)
    in_features = (math.prod(shapes.norm) if "tail" in inputs else 0) + \
        (math.prod(shapes.event) if "state" in inputs else 0)
    return mlp_size(in_features, math.prod(shapes.raw), net.mlp.hidden, net.mlp.blocks, net.mlp.time_dim, classes)


@attrs.frozen
class Estimate:
    """Bytes one process needs: ``parts`` of its largest stage (``stage``) on the training device,
    ``host`` parts in the computer's memory (the dataset, the samples kept)."""
    parameters: int
    processes: int
    stage: str
    parts: tuple[tuple[str, int], ...]
    host: tuple[tuple[str, int], ...]

    @property
    def device_bytes(self) -> int:
        return sum(b for _, b in self.parts)

    @property
    def host_bytes(self) -> int:
        return sum(b for _, b in self.host)


def estimate(spec: Spec, accelerator: str = "cpu") -> Estimate:
    """The memory estimate of a spec (resolved here) on ``accelerator`` ("cpu" or "cuda")."""
    spec = resolve(spec)
    info = DATASETS[spec.data.name]
    event = _event(spec)
    shapes = family_shapes(spec.process.family, event)
    E, S = math.prod(shapes.event), math.prod(shapes.stat)
    net = network_size(spec, accelerator)
    P = net.parameters
    train, procs = spec.train, spec.devices.processes
    act = 2 if train.precision in ("bf16", "fp16") else 4
    K = train.t_per_rollout
    shard = -(-train.batch_size // procs)
    micro = -(-shard // train.accumulation) * K
    copies = 5 if train.ema > 0 else 4
    stages = {"one training step": (
        (f"{P:,} parameters × {copies * 4} bytes for weights, " + ("EMA, " if train.ema > 0 else "") +
         "gradients and Adam moments", P * 4 * copies),
        (f"activations of {micro:,} examples (batch × t_per_rollout per micro-batch)",
         micro * (net.train_values * act + (E + S) * 8 * 6)),
        (f"roll-outs of {ROLLOUT_BLOCK} batches × {shard:,} examples × {K} step{'s' if K > 1 else ''} in float64",
         ROLLOUT_BLOCK * shard * (K * (E + S) + 4 * E) * 8),
    )}
    if spec.distill is not None:
        rows = -(-spec.distill.batch_size // procs)
        stages["one distillation step"] = (
            (f"{P:,} parameters × 20 bytes for the student (weights, gradients, Adam moments) and the teacher",
             P * 4 * 5),
            (f"activations of {rows:,} examples", rows * (net.train_values * act + 2 * net.forward_values * 4
                                                          + (E + S) * 8 * 8)),
        )
    rows = max(spec.sample.batch_size, spec.eval.batch_size)
    stages["sampling"] = (
        (f"{P:,} parameters" + (" with the training state (train.eval_every)" if train.eval_every else ""),
         P * 4 * (copies if train.eval_every else 2)),
        (f"a sampling batch of {rows:,}", rows * (net.forward_values * 4 + (E + S) * 8 * 8)),
    )
    stage = max(stages, key=lambda k: sum(b for _, b in stages[k]))
    host = []
    n = spec.data.num_examples or info.size
    if n:
        # float64 examples; float32 images and the copy made while converting them
        host.append((f"the dataset ({n:,} examples)", n * E * 8))
    kept = max(spec.sample.num_samples, spec.eval.num_samples if spec.eval.metrics else 0)
    host.append((f"{kept:,} samples", kept * E * 8 * 2))
    return Estimate(P, procs, stage, stages[stage], tuple(host))


def physical_memory() -> int | None:
    """Bytes of memory of this computer (None when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gpu_memory() -> int | None:
    """Bytes of memory of this process's GPU (``LOCAL_RANK``, else the first), None when unknown.

    From the device properties, not ``torch.cuda.mem_get_info``: that one creates a CUDA context
    that keeps hundreds of MiB of the GPU until the process ends (pytorch#86493; under the spawn
    launcher the parent would hold it for the whole run), and newer torch answers (0, 0) before
    CUDA is initialised. The total is the same figure as mem_get_info's second value."""
    index = int(os.environ.get("LOCAL_RANK", 0) or 0)
    try:
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            return None
        total = int(torch.cuda.get_device_properties(index).total_memory)
    except (RuntimeError, AssertionError, ValueError):
        return None
    return total or None


def device_memory(accelerator: str) -> tuple[str, int] | None:
    """("GPU", bytes) of this process's GPU for ``accelerator`` cuda or auto (when one is visible),
    else ("CPU", bytes of memory); None when unknown (or cuda without a GPU: the plan reports it)."""
    if accelerator in ("auto", "cuda"):
        total = gpu_memory()
        if total:
            return "GPU", total
        if accelerator == "cuda":
            return None
    ram = physical_memory()
    return ("CPU", ram) if ram else None


def _gib(n: int) -> str:
    value = n / GiB
    return f"{value:,.0f}" if value >= 100 else f"{value:.2g}" if value >= 0.01 else "< 0.01"


def memory_issue(spec: Spec, device: tuple[str, int] | None | bool = True) -> tuple[tuple, str, str] | None:
    """None when ``spec`` fits this machine (``device``: ("CPU" or "GPU", bytes), or True to look
    it up); else (the keys to locate the issue at, first written wins; the message; the hint)."""
    if device is True:
        device = device_memory(spec.devices.accelerator)
    if device is None:
        return None
    kind, capacity = device
    est = estimate(spec, "cuda" if kind == "GPU" else "cpu")
    procs = est.processes
    ram = physical_memory() if kind == "GPU" else capacity
    cpu = kind == "CPU"  # every process holds its own copy of everything, in one memory
    need = procs * (est.device_bytes + est.host_bytes) if cpu else est.device_bytes
    parts = list(est.parts) + (list(est.host) if cpu else [])
    if need <= capacity:
        if kind == "GPU" and ram and procs * est.host_bytes > ram:
            return _host_issue(est, ram)
        return None
    one = sum(b for _, b in parts)  # one process
    shown = [(what, b) for what, b in parts if b >= one / 100]  # the parts that matter
    each = "; ".join(f"{what}: {_gib(b)} GiB" for what, b in shown)
    if kind == "CPU" and procs > 1:
        each = f"{procs} processes of {_gib(one)} GiB each: {each}"
    elif procs > 1:
        each = f"per process and GPU: {each}"
    where = f"this machine's {'GPU' if kind == 'GPU' else 'CPU'} has {_gib(capacity)} GiB"
    message = f"needs about {_gib(need)} GiB for {est.stage} ({each}), and {where}"
    keys, hint = _advice(spec, est, parts, gpus=kind == "GPU")
    return keys, message, hint


def _host_issue(est: Estimate, ram: int) -> tuple[tuple, str, str]:
    each = ", ".join(f"{what}: {_gib(b)} GiB" for what, b in est.host)
    per = f" × {est.processes} processes" if est.processes > 1 else ""
    return ((("data", "num_examples"), ("sample", "num_samples"), ("eval", "num_samples")),
            f"needs about {_gib(est.processes * est.host_bytes)} GiB of memory for the data ({each}){per}, and "
            f"this machine has {_gib(ram)} GiB", "lower data.num_examples, sample.num_samples or eval.num_samples")


def _advice(spec: Spec, est: Estimate, parts, gpus: bool) -> tuple[tuple, str]:
    """The keys to blame for the largest part, and what to lower (more processes help on GPUs,
    each with its own memory, not on one CPU)."""
    more = " or use more GPUs (devices.processes)" if gpus else ""
    what = max(parts, key=lambda p: p[1])[0]
    if what.startswith(f"{est.parameters:,} parameters"):
        keys = (("network", "mlp", "hidden"), ("network", "mlp", "blocks"), ("network", "mlp", "time_dim"),
                ("data", "dim"), ("network", "unet", "channels"), ("network", "unet", "channel_mult"),
                ("network", "unet", "res_blocks"), ("network", "preset"), ("data", "image_size"), ("data", "name"))
        return keys, ("make the network smaller (network.mlp.hidden or blocks, network.unet.channels, or a smaller "
                      "preset) or the data smaller (data.dim, data.image_size)")
    if what.startswith("the dataset") or what.endswith("samples"):
        return ((("data", "num_examples"), ("data", "dim"), ("sample", "num_samples"), ("eval", "num_samples"),
                 ("data", "name")), "lower data.num_examples, data.dim, sample.num_samples or eval.num_samples")
    if what.startswith("a sampling batch"):
        return ((("sample", "batch_size"), ("eval", "batch_size"), ("network", "mlp", "hidden"), ("data", "dim")),
                "lower sample.batch_size and eval.batch_size")
    if spec.distill is not None and est.stage == "one distillation step":
        return ((("distill", "batch_size"), ("train", "batch_size")),
                "lower distill.batch_size (by default train.batch_size)" + more)
    keys = (("train", "batch_size"), ("train", "t_per_rollout"), ("data", "dim"), ("data", "image_size"),
            ("network", "mlp", "hidden"), ("network", "unet", "channels"))
    hint = "lower train.batch_size or train.t_per_rollout"
    if what.startswith("activations"):
        hint += ", split the batch into micro-batches (train.accumulation)"
        if spec.network.kind != "mlp" and DATASETS[spec.data.name].is_image:
            hint += ", set train.activation_checkpointing = true"
    return keys, hint + more
