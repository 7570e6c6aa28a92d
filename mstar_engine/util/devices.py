"""Where tensors live: the training device of a spec, random generators on it, host → device copies.

On the CPU every random stream is a CPU ``torch.Generator``, exactly as before any GPU support, so
CPU runs stay bit-for-bit reproducible. On CUDA the streams that feed device tensors (roll-outs,
sampling noise) are CUDA generators seeded the same way: reproducible on one GPU model, not equal
to the CPU numbers. Host batches are pinned and copied asynchronously.
"""
from __future__ import annotations

import contextlib
import os

import torch


def training_device(accelerator: str) -> torch.device:
    """The device for ``devices.accelerator``: cpu, cuda (this process's GPU: ``LOCAL_RANK``), or
    auto (cuda when one is visible)."""
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError('devices.accelerator = "cuda" but no GPU is visible; use "auto" or "cpu"')
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (reduced to 63 bits)."""
    return torch.Generator(device=device).manual_seed(int(seed) % 2**63)


def to_device(x: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """``x`` on ``device``; from the host to a GPU through pinned memory, without blocking."""
    if x is None or x.device == device:
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for a precision setting (bf16 on CPU or GPU, fp16 on GPU), else a no-op."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)
