"""Keep freed host memory in the process, so a CPU training step does not fault its pages in anew.

glibc's malloc hands blocks of 128 KiB and more back to the kernel when they are freed (``munmap``,
or trimming the top of the heap); the next step allocates them again and the kernel faults in and
zeroes every page: hundreds to thousands of page faults per step of a small U-Net on the CPU, a few
percent of its time. :func:`keep_freed_host_memory` raises glibc's two thresholds (``mallopt``),
so blocks up to 32 MiB come from the heap and the heap is not trimmed below 1 GiB of free space:
the process keeps its peak working set, which a training step reaches every step anyway. Tensors
above 32 MiB still go to ``mmap``. Elsewhere (macOS, musl) nothing changes.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (HEAP_MAX / 2 on 64-bit)
TRIM_THRESHOLD = 2**30

_done: bool | None = None


def keep_freed_host_memory() -> bool:
    """Set glibc's thresholds once per process; whether they are set (False off glibc)."""
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None)
                libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
                _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
                    bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError):
                _done = False
    return _done
