"""What the environment says about processes, without importing torch."""
from __future__ import annotations

import os


def process_count(requested: int | None, default: int) -> int:
    """The processes of a launch: torchrun's, else the ``requested`` count
    (``--nproc-per-node``), else ``default`` (the spec's ``devices.processes``)."""
    return torchrun_world() or requested or default


def silent(line: str) -> None:
    """The log of processes other than rank 0 (their lines would repeat rank 0's)."""


def torchrun_world() -> int | None:
    """The number of processes torchrun started (``WORLD_SIZE`` with ``RANK``), or None."""
    return int(os.environ["WORLD_SIZE"]) if "RANK" in os.environ and "WORLD_SIZE" in os.environ else None


def secondary_process() -> bool:
    """Whether this is a torchrun process other than rank 0 (which alone prints)."""
    return int(os.environ.get("RANK", "0")) != 0


def resolve_backend(backend: str, accelerator: str) -> str:
    """``devices.backend``: auto is nccl on CUDA and gloo on the CPU."""
    return backend if backend != "auto" else ("nccl" if accelerator == "cuda" else "gloo")
