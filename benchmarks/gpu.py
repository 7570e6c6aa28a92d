"""GPU benchmarks of issue #17, one section per call (``benchmarks/gpu.sh`` runs them all under
time limits and prints the summary). Every section appends JSON lines to ``OUT/gpu.jsonl``, one
object per measurement, each with a ``section`` key:

* ``device``   — the machine: GPU name and memory, torch and CUDA versions, the commit.
* ``train``    — ``mstar bench`` of the CIFAR-10 preset (``specs/cifar10-gaussian.toml``, bf16,
                 channels_last, batch 128) through the real training loop, beside the plain fp32
                 PyTorch DDPM loop timed in the same process (``ratio``); one row as the spec
                 stands (section ``bench``) and one with ``train.compile=true`` (``bench-compile``).
                 Goals: ≥ 2,500 images/s and ≥ 1.5 × the plain loop.
                 Data: CIFAR-10 from ``--cifar-root`` (default ``data/``, the spec's data.root)
                 when its files are there; otherwise the same spec on ``data.name = image-folder``
                 with random 32×32 RGB PNG images (10 class folders) written to a temporary folder,
                 so the real data pipeline runs (uint8 images, flips) and only the pixels are
                 random — the row's ``data`` says which.
* ``sampling`` — seconds per network evaluation while sampling (``sample_s_per_network_eval`` of
                 each bench, at the spec's sampling batch).
* ``memory``   — peak memory: each bench's ``peak_memory_gib`` and ``torch.cuda.max_memory_allocated``
                 of the network steps and roll-outs timed here (peak resident set on the CPU).
* ``network``  — one forward + backward + AdamW step of the CIFAR-10 U-Net preset
                 (``build_unet(3, 3, 32, preset="cifar10-ddpm", dropout=0.1)``, channels_last on
                 CUDA) at batch 128 on random images, under bf16 autocast and in fp32.
* ``rollout``  — the coupled forward roll-out ``process.forward.rollout`` (ddpm coupling) at CIFAR
                 size (batch 128 × 3×32×32, T = 1000) with K = 8 kept steps t per example, for Beta
                 (beta-cosine schedule) and, for comparison, Gaussian (cosine schedule), with x0 in
                 float64 and float32 on the device. A roll-out serves K training steps, so its cost
                 per training step is roll-out / K; ``fraction_of_step_bf16`` (``_fp32``) is that
                 cost's share of a whole training step, r / (r + network step). Single steps are
                 timed at a spread of t (the loop body of ``rollout``, same rows and dtypes) and
                 interpolated over t = 1..T; the whole roll-out is then timed too when that estimate
                 fits the time left (``measured`` says which figure ``rollout_s`` is).

``--cpu`` is the smoke mode: every section at tiny sizes on the CPU with one thread (batch 2,
T = 20, 8×8 images and a small U-Net; the bench sections run ``specs/digits.toml`` with overrides
on the same random image folder, and the compile row with ``TORCHDYNAMO_DISABLE=1``, since an
inductor build on a CPU takes minutes). Goals are not judged in that mode.

Usage: python benchmarks/gpu.py {device,bench,bench-compile,rollout,summary} [--out DIR] [--cpu]
                                [--deadline SECONDS] [--bench-steps N] [--bench-repeats N]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "gpu.jsonl"
SECTIONS = ("device", "bench", "bench-compile", "rollout", "summary")
GOAL_IMAGES_PER_S = 2500.0
GOAL_RATIO = 1.5
CIFAR_SPEC = "specs/cifar10-gaussian.toml"
SMOKE_SPEC = "specs/digits.toml"
#: The CPU smoke's bench: the digits spec on 8x8 RGB images with a small U-Net, small enough for seconds.
SMOKE_OVERRIDES = ("devices.accelerator=cpu", "train.batch_size=8", "process.steps=20", "network.unet.channels=8",
                   "network.unet.channel_mult=[1]", "network.unet.attention_resolutions=[]",
                   "network.unet.head_channels=8", "sample.num_samples=4", "sample.batch_size=4",
                   "train.precision=bf16")


# ------------------------------------------------------------------------------------------- helpers
def settings(cpu: bool) -> dict:
    """Sizes of each section: the GPU run, or the CPU smoke."""
    if cpu:
        return dict(batch=2, T=20, K=8, size=8, at=[1, 2, 5, 10, 19], net_warmup=1, net_steps=2, step_repeats=2,
                    whole_limit=30.0, images_per_class=16, classes=4, bench_steps=1, bench_repeats=1,
                    compile_repeats=1)
    return dict(batch=128, T=1000, K=8, size=32, at=[1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 999], net_warmup=3,
                net_steps=20, step_repeats=3, whole_limit=25.0, images_per_class=256, classes=10, bench_steps=32,
                bench_repeats=3, compile_repeats=2)


def device_of(cpu: bool) -> torch.device:
    if cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible: run on a GPU machine, or pass --cpu for the smoke mode")
    return torch.device("cuda", 0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    """The accelerator's peak allocation since the last reset; on the CPU the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def append(out: Path, row: dict) -> None:
    """One JSON line, written and flushed at once (a section killed by its time limit keeps its rows)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RESULTS, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_rows(out: Path) -> list[dict]:
    path = out / RESULTS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def number(d: dict, *keys: str) -> float | None:
    """The first of ``keys`` that ``d`` holds as a finite number (bench's keys change over time)."""
    for key in keys:
        value = d.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def positive(row: dict) -> dict:
    """``row`` without numeric entries that are None, not finite or not positive (the JSON lines
    hold positive figures only; what was not measured is left out, not written as 0)."""
    return {k: v for k, v in row.items()
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and not (math.isfinite(v) and v > 0))}


# ------------------------------------------------------------------------------------------- device
def section_device(args) -> None:
    device = device_of(args.cpu)
    row = {"section": "device", "cpu_smoke": args.cpu, "device": str(device), "torch": torch.__version__,
           "cuda": torch.version.cuda, "python": platform.python_version(), "cpu_count": os.cpu_count(),
           "threads": torch.get_num_threads(), "machine": platform.machine(),
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        row.update(name=props.name, gpu_memory_gib=props.total_memory / 2**30,
                   capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version())
    else:
        row["name"] = platform.processor() or platform.machine()
    append(args.out, positive(row))
    print(f"device: {row['name']} ({device}), torch {torch.__version__}, CUDA {torch.version.cuda}")


def commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# -------------------------------------------------------------------------------------------- bench
def random_image_folder(root: Path, classes: int, per_class: int, size: int, seed: int = 0) -> None:
    """``classes`` folders of ``per_class`` random ``size``×``size`` RGB PNG images (image-folder layout)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def cifar_present(root: Path) -> bool:
    return all((root / "cifar-10-batches-py" / name).exists() for name in ("data_batch_1", "test_batch"))


def bench_supports_repeats() -> bool:
    """Whether ``mstar bench`` takes --repeats (added in issue #17; older trees time one round)."""
    try:
        from mstar_cli.main import bench
    except Exception:  # noqa: BLE001 - an older or broken CLI: call it without the option
        return False
    return any(p.name == "repeats" for p in bench.params)


def run_bench(spec: str, overrides: list[str], steps: int, repeats: int | None, env: dict,
              timeout: float | None) -> dict:
    """``mstar bench SPEC OVERRIDES --steps N [--repeats R] --json`` in a child process; its JSON."""
    cmd = [sys.executable, "-c", "from mstar_cli.main import main; main()", "bench", spec, *overrides,
           "--steps", str(steps), *(["--repeats", str(repeats)] if repeats else []), "--json"]
    print("$ mstar " + " ".join(cmd[3:]), flush=True)
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"mstar bench: stopped after {timeout:.0f} s, the section's time limit", file=sys.stderr)
        sys.exit(124)
    if done.returncode:
        raise SystemExit(f"mstar bench failed (exit status {done.returncode})")
    return last_json(done.stdout)


def last_json(text: str) -> dict:
    """The JSON object that ``mstar bench --json`` printed, whatever else came before it on stdout."""
    decoder = json.JSONDecoder()
    found = None
    for index in (i for i in range(len(text)) if text[i] == "{" and (i == 0 or text[i - 1] == "\n")):
        try:
            value, _ = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            found = value
    if found is None:
        raise SystemExit(f"mstar bench printed no JSON object: {text[-2000:]!r}")
    return found


def section_bench(args, compiled: bool) -> None:
    s = settings(args.cpu)
    started = time.perf_counter()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    overrides = ["eval.metrics=[]"]  # bench never evaluates; this spares the check for Inception weights
    tmp = None
    cifar_root = Path(args.cifar_root) if Path(args.cifar_root).is_absolute() else ROOT / args.cifar_root
    try:
        if not args.cpu and cifar_present(cifar_root):
            spec = CIFAR_SPEC
            overrides.append(f"data.root={cifar_root}")
            data = f"CIFAR-10 from {cifar_root}"
        else:
            tmp = Path(tempfile.mkdtemp(prefix="mstar-gpu-bench-"))
            random_image_folder(tmp, s["classes"], s["images_per_class"], s["size"])
            spec = SMOKE_SPEC if args.cpu else CIFAR_SPEC
            overrides += [*(SMOKE_OVERRIDES if args.cpu else ()), "data.name=image-folder", f"data.root={tmp}",
                          f"data.image_size={s['size']}"]
            n = s["classes"] * s["images_per_class"]
            data = (f"random {s['size']}x{s['size']} RGB PNG images ({n} in {s['classes']} class folders, "
                    f"data.name = image-folder)" + ("" if args.cpu else f": no CIFAR-10 files under {cifar_root}"))
        if args.cpu:
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        note = None
        if compiled:
            overrides.append("train.compile=true")
            if args.cpu:
                env["TORCHDYNAMO_DISABLE"] = "1"
                note = "torch.compile disabled on the CPU smoke (TORCHDYNAMO_DISABLE=1): the code path only"
        steps = args.bench_steps or s["bench_steps"]
        repeats = args.bench_repeats or (s["compile_repeats"] if compiled else s["bench_repeats"])
        if not bench_supports_repeats():
            repeats = None
        timeout = max(args.deadline - (time.perf_counter() - started) - 5, 1) if args.deadline else None
        result = run_bench(spec, overrides, steps, repeats, env, timeout)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    variant = "bf16+compile" if compiled else "bf16"
    train_rate = number(result, "train_examples_per_s")
    ref_rate = number(result, "reference_examples_per_s")
    ratio = number(result, "ratio")
    if ratio is None and train_rate and ref_rate:
        ratio = train_rate / ref_rate
    low, high = number(result, "ratio_low"), number(result, "ratio_high")
    spread = number(result, "ratio_spread")
    if spread is None and low is not None and high is not None:
        spread = high - low
    common = {"variant": variant, "spec": spec, "data": data, "precision": result.get("precision", "bf16")}
    seconds = time.perf_counter() - started
    append(args.out, positive({
        "section": "train", **common, "overrides": overrides, "note": note,
        "images_per_s": train_rate, "reference_images_per_s": ref_rate, "ratio": ratio, "ratio_low": low,
        "ratio_high": high, "ratio_spread": spread, "repeats": number(result, "repeats") or repeats,
        "timed_steps": number(result, "timed_steps"), "batch_size": number(result, "batch_size"),
        "t_per_rollout": number(result, "t_per_rollout"), "input_share": number(result, "input_share"),
        "parameters": number(result, "parameters"), "goal_images_per_s": GOAL_IMAGES_PER_S, "goal_ratio": GOAL_RATIO,
        "cpu_smoke": args.cpu, "seconds": seconds,
        "bench": {k: v for k, v in result.items() if k != "estimates"}}))
    append(args.out, positive({
        "section": "sampling", **common, "s_per_network_eval": number(result, "sample_s_per_network_eval"),
        "s_per_batch": number(result, "sample_s_per_batch"), "sample_batch": number(result, "sample_batch")}))
    append(args.out, positive({
        "section": "memory", "what": f"mstar bench, {variant}", "peak_gib": number(result, "peak_memory_gib"),
        "measure": "torch.cuda.max_memory_allocated" if str(result.get("device", "")).startswith("cuda")
        else "peak resident set of the process"}))
    print(f"{variant}: {train_rate or float('nan'):,.0f} images/s, plain fp32 loop "
          f"{ref_rate or float('nan'):,.0f} images/s, ratio {ratio or float('nan'):.3f}; "
          f"{seconds:.0f} s", flush=True)


# ------------------------------------------------------------------------------------------ network
def build_network(cpu: bool, size: int):
    from mstar_engine.networks.unet import build_unet
    if cpu:  # a small U-Net of the same code
        cfg = {"channels": 8, "channel_mult": [1], "res_blocks": 1, "attention_resolutions": [], "head_channels": 8}
        return build_unet(3, 3, size, cfg=cfg, dropout=0.1)
    return build_unet(3, 3, 32, preset="cifar10-ddpm", dropout=0.1)


def network_step(device: torch.device, cpu: bool, s: dict) -> list[dict]:
    """Seconds of one forward + backward + AdamW step of the CIFAR-10 U-Net preset at the batch
    size, in bf16 autocast and in fp32 (the network part of a training step), with peak memory."""
    B, size = s["batch"], s["size"]
    net = build_network(cpu, size).to(device)
    channels_last = device.type == "cuda"  # as the CIFAR-10 spec trains (train.channels_last = true)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, 3, size, size, generator=g, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.randint(1, 1000, (B,), generator=g, device=device).float()
    rows = []
    for precision in ("bf16", "fp32"):
        def step():
            if precision == "bf16":
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                    out = net(x, t, None)
            else:
                out = net(x, t, None)
            loss = out.float().pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        reset_peak(device)
        for _ in range(s["net_warmup"]):
            step()
        sync(device)
        start = time.perf_counter()
        for _ in range(s["net_steps"]):
            step()
        sync(device)
        seconds = (time.perf_counter() - start) / s["net_steps"]
        rows.append({"section": "network", "precision": precision, "batch": B, "image": [3, size, size],
                     "network": "small U-Net (CPU smoke)" if cpu else "cifar10-ddpm preset", "step_s": seconds,
                     "images_per_s": B / seconds, "peak_memory_gib": peak_gib(device), "channels_last": channels_last,
                     "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                     "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                     "parameters": sum(p.numel() for p in net.parameters()), "timed_steps": s["net_steps"]})
        print(f"network step, {precision}, batch {B}: {seconds * 1e3:.1f} ms ({B / seconds:,.0f} images/s)", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ roll-out
def family_for(name: str, T: int, size: int, device: torch.device):
    """(family on ``device``, its ddpm coupling ρ of length T + 1)."""
    from mstar_engine.schedules import build_coupling, build_schedule, gaussian_equivalent_snr
    shape = (3, size, size)
    if name == "beta":
        from mstar_engine.families.beta import Beta
        schedule = "beta-cosine"
        fam = Beta(shape, nu=build_schedule(schedule, T)["nu"])
    else:
        from mstar_engine.families.gaussian import Gaussian
        schedule = "cosine"
        fam = Gaussian(shape, **build_schedule(schedule, T))
    rho = build_coupling("ddpm", T, snr=gaussian_equivalent_snr(schedule, T))
    return fam.to(device), rho, schedule


def x0_for(name: str, B: int, size: int, dtype: torch.dtype, device: torch.device, g) -> torch.Tensor:
    x = torch.rand(B, 3, size, size, generator=g, device=device, dtype=torch.float64)
    x = x.clamp(0.01, 0.99) if name == "beta" else 2 * x - 1  # Beta data in (0, 1), Gaussian in [-1, 1]
    return x.to(dtype)


def step_seconds(fam, x0, keep, rho, step: int, g, repeats: int) -> float:
    """Seconds of one step x_{step+1} → x_step of ``rollout``'s loop (a bijective noise map: ξ is
    carried, ξ_step = ρ ξ_{step+1} + √(1 − ρ²) ε; the rows still active at this step; the same host
    reads), the median of ``repeats`` after one untimed call."""
    device, dtype = x0.device, x0.dtype
    lowest = keep.min(dim=1).values
    idx = torch.nonzero(lowest <= step).squeeze(1)
    if idx.numel() == 0:
        return 0.0
    B = x0.shape[0]
    xi = torch.randn((B, *fam.noise_shape), generator=g, device=device, dtype=dtype)
    x = torch.empty_like(x0)
    s = x0.new_zeros((B, *fam.stat_shape))
    rho = rho.to(device)
    aux = fam.inverse_uses_aux

    def one():
        if aux:  # an auxiliary-variable map inverts x_{step+1} first (not the Beta or Gaussian map)
            from mstar_engine.process.kernel import coupled_step
            x_new = coupled_step(fam, fam.sample(x0[idx], step + 1, g), x0[idx], step + 1, rho[step + 1], g)
        else:
            eps = torch.randn((idx.numel(), *fam.noise_shape), generator=g, device=device, dtype=dtype)
            if float(rho[step + 1]) != 0.0:
                r = rho[step + 1].to(dtype)
                eps = r * xi[idx] + torch.sqrt(1 - r * r) * eps
            xi[idx] = eps
            x_new = fam.from_noise(eps, x0[idx], step)
        x[idx] = x_new
        s[idx] += fam.stat(x_new, step)
        rows, _ = torch.nonzero(keep[idx] == step, as_tuple=True)
        return rows.numel()
    one()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        one()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def section_rollout(args) -> None:
    from mstar_engine.process.forward import rollout
    s = settings(args.cpu)
    started = time.perf_counter()
    deadline = started + args.deadline - 10 if args.deadline else math.inf
    device = device_of(args.cpu)
    if args.cpu:
        torch.set_num_threads(1)
        try:  # the Beta map on the torch numerics that accelerators run, not scipy (the CPU default)
            from mstar_engine.numerics import beta_map
            beta_map.CPU_BACKEND = "torch"
        except (ImportError, AttributeError):
            pass
    torch.manual_seed(0)
    nets = network_step(device, args.cpu, s)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the network and its optimiser state are gone with network_step's frame
    for row in nets:
        append(args.out, positive(row))
        what = f"network step, {row['precision']}, batch {row['batch']}"
        append(args.out, positive({"section": "memory", "what": what, "peak_gib": row["peak_memory_gib"],
                                   "measure": measure(device)}))
    step = {row["precision"]: row["step_s"] for row in nets}
    B, T, K, size = s["batch"], s["T"], s["K"], s["size"]
    for name in ("beta", "gaussian"):
        for dtype in (torch.float64, torch.float32):
            label = f"{name}, {str(dtype).removeprefix('torch.')}"
            if time.perf_counter() > deadline - 5:
                print(f"{label}: skipped, the section's time is up", flush=True)
                append(args.out, {"section": "rollout", "family": name, "dtype": str(dtype).removeprefix("torch."),
                                  "skipped": "time limit"})
                continue
            fam, rho, schedule = family_for(name, T, size, device)
            g = torch.Generator(device=device).manual_seed(0)
            x0 = x0_for(name, B, size, dtype, device, g)
            keep = torch.randint(1, T + 1, (B, K), generator=g, device=device)
            reset_peak(device)
            at = sorted({min(max(1, t), T - 1) for t in s["at"]})
            per = {t: step_seconds(fam, x0, keep, rho, t, g, s["step_repeats"]) for t in at}
            lowest = int(keep.min())
            grid = np.arange(lowest, T + 1)
            interpolated = float(np.interp(grid, at, [per[t] for t in at]).sum())
            whole = None
            if interpolated < min(s["whole_limit"], (deadline - time.perf_counter()) / 2):
                sync(device)
                start = time.perf_counter()
                rollout(fam, x0, keep, rho=rho, generator=g)
                sync(device)
                whole = time.perf_counter() - start
            seconds = whole if whole is not None else interpolated
            per_step = seconds / K
            row = {"section": "rollout", "family": name, "schedule": schedule, "coupling": "ddpm",
                   "dtype": str(dtype).removeprefix("torch."), "batch": B, "image": [3, size, size], "T": T, "K": K,
                   "rollout_s": seconds, "measured": "whole" if whole is not None else "interpolated",
                   "whole_s": whole, "interpolated_s": interpolated, "per_training_step_s": per_step,
                   "fraction_of_step_bf16": per_step / (per_step + step["bf16"]),
                   "fraction_of_step_fp32": per_step / (per_step + step["fp32"]),
                   "ratio_to_step_bf16": per_step / step["bf16"], "ratio_to_step_fp32": per_step / step["fp32"],
                   "network_step_bf16_s": step["bf16"], "network_step_fp32_s": step["fp32"],
                   "peak_memory_gib": peak_gib(device),
                   "step_ms_by_t": {str(t): round(v * 1e3, 4) for t, v in per.items()}, "cpu_smoke": args.cpu}
            append(args.out, positive(row))
            append(args.out, positive({"section": "memory", "what": f"coupled roll-out, {label}, batch {B}",
                                       "peak_gib": row["peak_memory_gib"], "measure": measure(device)}))
            print(f"roll-out {label}: {seconds:.3f} s ({row['measured']}; interpolated {interpolated:.3f} s), "
                  f"{per_step * 1e3:.1f} ms per training step = {row['fraction_of_step_bf16']:.1%} of a bf16 step, "
                  f"{row['fraction_of_step_fp32']:.1%} of an fp32 step", flush=True)
            del fam, x0, keep
            if device.type == "cuda":
                torch.cuda.empty_cache()


def measure(device: torch.device) -> str:
    return "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak resident set of the process"


# ------------------------------------------------------------------------------------------ summary
def section_summary(args) -> None:
    text = summary(read_rows(args.out), args.out)
    print(text)
    (args.out / "summary.txt").write_text(text + "\n")


def summary(rows: list[dict], out: Path) -> str:
    """The human-readable report of the JSON lines (missing figures print as nan, never fail)."""
    by: dict = {}
    for row in rows:
        by.setdefault(row.get("section"), []).append(row)
    smoke = any(r.get("cpu_smoke") for r in rows)

    def v(r: dict, key: str, scale: float = 1.0) -> float:
        value = number(r, key)
        return float("nan") if value is None else value * scale

    def goal(value: float | None, target: float, fmt: str) -> str:
        if value is None:
            return "not measured"
        if smoke:
            return f"goal {fmt.format(target)}, not judged on the CPU"
        return f"goal {fmt.format(target)}: {'met' if value >= target else 'NOT met'}"
    dev = (by.get("device") or [{}])[-1]
    lines = [f"GPU benchmarks (issue #17){' - CPU SMOKE, tiny sizes' if smoke else ''}: {dev.get('name', '?')}, "
             f"torch {dev.get('torch', '?')}, CUDA {dev.get('cuda')}, commit {dev.get('commit')}; "
             f"{len(rows)} rows in {out / RESULTS}",
             "", "1. training images/s, real loop (mstar bench), beside the plain fp32 PyTorch DDPM loop "
             "(same backbone and data)"]
    for r in by.get("train", []):
        spread = ""
        if number(r, "ratio_low") is not None and number(r, "ratio_high") is not None:
            spread = f", range {v(r, 'ratio_low'):.2f}-{v(r, 'ratio_high'):.2f} over {v(r, 'repeats'):.0f} rounds"
        lines.append(f"   {r.get('variant', '?'):13s} {v(r, 'images_per_s'):8,.0f} images/s   "
                     f"[{goal(number(r, 'images_per_s'), GOAL_IMAGES_PER_S, '>= {:,.0f}')}]")
        lines.append(f"   {'':13s} plain fp32 loop {v(r, 'reference_images_per_s'):,.0f} images/s; ratio "
                     f"{v(r, 'ratio'):.2f}x{spread}   [{goal(number(r, 'ratio'), GOAL_RATIO, '>= {:.1f}x')}]")
        if r.get("note"):
            lines.append(f"   {'':13s} {r['note']}")
    if by.get("train"):
        lines.append(f"   data: {by['train'][0].get('data')}; spec {by['train'][0].get('spec')}")
    lines += ["", "2. coupled roll-out (ddpm coupling): per training step = roll-out / K; share of a step = "
              "r / (r + network step)"]
    for r in by.get("network", []):
        lines.append(f"   network step {r.get('precision', '?')}: {v(r, 'step_s', 1e3):8.1f} ms at batch "
                     f"{v(r, 'batch'):.0f} ({r.get('network')}, {v(r, 'images_per_s'):,.0f} images/s, peak "
                     f"{v(r, 'peak_memory_gib'):.2f} GiB)")
    for r in by.get("rollout", []):
        name = f"{r.get('family', '?'):8s} {r.get('dtype', '?'):7s}"
        if r.get("skipped"):
            lines.append(f"   {name} skipped ({r['skipped']})")
            continue
        lines.append(f"   {name} roll-out {v(r, 'rollout_s'):8.3f} s ({r.get('measured')}; T = {v(r, 'T'):.0f}, "
                     f"K = {v(r, 'K'):.0f}, batch {v(r, 'batch'):.0f}) -> {v(r, 'per_training_step_s', 1e3):8.2f} ms "
                     f"per step: {v(r, 'fraction_of_step_bf16'):6.1%} of a bf16 step, "
                     f"{v(r, 'fraction_of_step_fp32'):6.1%} of an fp32 step")
    lines += ["", "3. sampling"]
    for r in by.get("sampling", []):
        lines.append(f"   {r.get('variant', '?'):13s} {v(r, 's_per_network_eval', 1e3):8.2f} ms per network evaluation "
                     f"(batch {v(r, 'sample_batch'):.0f}; {number(r, 's_per_batch') or 0.0:.3f} s per batch besides)")
    lines += ["", "4. peak memory"]
    for r in by.get("memory", []):
        lines.append(f"   {r.get('what', '?'):46s} {v(r, 'peak_gib'):7.2f} GiB ({r.get('measure')})")
    failures = by.get("failure", [])
    if failures:
        lines += ["", "FAILED sections: " + "; ".join(f"{r.get('name')} ({r.get('status')}, exit {r.get('rc')}, "
                                                    f"limit {r.get('limit_s')} s)" for r in failures)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=SECTIONS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu",
                        help="results folder (gpu.jsonl, summary.txt)")
    parser.add_argument("--cpu", action="store_true", help="smoke mode: tiny sizes on the CPU")
    parser.add_argument("--deadline", type=float, default=0.0, help="seconds this section may take (0: no limit); "
                        "the roll-out section skips the whole roll-out (interpolating instead) when it would not fit")
    parser.add_argument("--cifar-root", default="data", help="folder holding cifar-10-batches-py/ (relative to the "
                        "repository root unless absolute); random images of the same size when absent")
    parser.add_argument("--bench-steps", type=int, default=0, help="mstar bench --steps (default 32; CPU 1)")
    parser.add_argument("--bench-repeats", type=int, default=0, help="mstar bench --repeats (default 3, 2 with "
                        "compile; CPU 1)")
    args = parser.parse_args(argv)
    if args.section == "device":
        section_device(args)
    elif args.section == "bench":
        section_bench(args, compiled=False)
    elif args.section == "bench-compile":
        section_bench(args, compiled=True)
    elif args.section == "rollout":
        section_rollout(args)
    else:
        section_summary(args)


if __name__ == "__main__":
    main()
