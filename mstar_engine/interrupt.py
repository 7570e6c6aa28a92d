"""Ctrl-C during training or distillation: finish the optimiser step, write a checkpoint, stop.

The ``mstar`` command switches this on (:func:`enable`, through the environment so that the
processes of a multi-process launch inherit it); a library caller's Ctrl-C keeps Python's default
(an immediate ``KeyboardInterrupt``). While a loop runs inside :func:`graceful_stop`, the first
Ctrl-C only raises a flag; the loop adds it to the collective it already makes every step, so every
process stops after the same step, writes the checkpoint and raises :class:`Interrupted`. A second
Ctrl-C stops at once (the last checkpoint written stays usable).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

SWITCH = "MSTAR_GRACEFUL_STOP"


class Interrupted(RuntimeError):
    """The run stopped at a step boundary on Ctrl-C, after writing a checkpoint."""


class _Flag:
    raised = False


_FLAG = _Flag()


def enable() -> None:
    """Turn graceful stops on for this process and the processes it starts."""
    os.environ[SWITCH] = "1"


def requested() -> bool:
    """Whether Ctrl-C was pressed since the innermost :func:`graceful_stop` began."""
    return _FLAG.raised


@contextmanager
def graceful_stop(announce: bool = True) -> Iterator[None]:
    """Within the block, the first Ctrl-C sets :func:`requested` (and says so on rank 0 when
    ``announce``); the second raises ``KeyboardInterrupt``. Does nothing unless :func:`enable` was
    called (here or in a parent process), outside the main thread, or when someone else handles
    SIGINT."""
    usable = (os.environ.get(SWITCH) == "1" and threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if not usable:
        yield
        return

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked child (a DataLoader worker): its parent decides
            return
        if _FLAG.raised:
            raise KeyboardInterrupt
        _FLAG.raised = True
        if announce and os.environ.get("RANK", "0") == "0":
            print("\nCtrl-C: stopping after this step and writing a checkpoint (Ctrl-C again to stop at once)",
                  file=sys.stderr, flush=True)

    _FLAG.raised = False
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _FLAG.raised = False
