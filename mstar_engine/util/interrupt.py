"""Ctrl-C during training or distillation: finish the optimiser step, write a checkpoint, stop.

The ``mstar`` command switches this on (:func:`enable`, through the environment so that the
processes of a multi-process launch inherit it); a library caller's Ctrl-C keeps Python's default
(an immediate ``KeyboardInterrupt``). While a loop runs inside :func:`graceful_stop`, the first
Ctrl-C only raises a flag; the loop adds it to the collective it already makes every step, so every
process stops after the same step, writes the checkpoint and raises :class:`Interrupted`. A second
Ctrl-C stops at once (the last checkpoint written stays usable): :class:`StoppedAtOnce`, a
``KeyboardInterrupt``.

Tests press Ctrl-C at a chosen step with :data:`TEST_SIGNALS` (read here only; ignored unless set):
``MSTAR_TEST_SIGNAL_AT_STEP=12:INT`` makes process 0 send SIGINT to its process group (what a
terminal's Ctrl-C does) during the 12th optimiser step that a training or distillation loop makes in
this process (counted from where the loop started or resumed; the signal arrives before the step's
Ctrl-C decision, so the loop stops after that step). ``12:INT,12:INT`` presses it twice (stop at
once), ``50:KILL`` sends SIGKILL; each entry is sent once per process. It counts the loops' calls of
:func:`requested`, which both make once per step. It refuses to run unless the process leads its
session's process group (``start_new_session=True``), so that it never signals the test runner.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

SWITCH = "MSTAR_GRACEFUL_STOP"
TEST_SIGNALS = "MSTAR_TEST_SIGNAL_AT_STEP"
AT_ONCE = ("stopped at once by a second Ctrl-C; the last checkpoint written stays usable: run the same command again "
           "to resume")


class Interrupted(RuntimeError):
    """The run stopped at a step boundary on Ctrl-C, after writing a checkpoint."""


class StoppedAtOnce(KeyboardInterrupt):
    """A second Ctrl-C during training or distillation: stopped without finishing the step."""


class _Flag:
    raised = False
    steps = 0                               # requested() calls in this block: one per optimiser step
    signals: list[tuple[int, int]] = []     # (step, signal) of TEST_SIGNALS still to send
    armed: str | None = None                # the TEST_SIGNALS value they came from


_FLAG = _Flag()


def enable() -> None:
    """Turn graceful stops on for this process and the processes it starts."""
    os.environ[SWITCH] = "1"


def requested() -> bool:
    """Whether Ctrl-C was pressed since the innermost :func:`graceful_stop` began."""
    if _FLAG.signals:
        _send_test_signals()
    return _FLAG.raised


def pressed() -> bool:
    """Whether Ctrl-C was pressed since the innermost :func:`graceful_stop` began, for a caller that
    waits on other processes (not an optimiser step: :data:`TEST_SIGNALS` do not count it)."""
    return _FLAG.raised


def _arm_test_signals() -> None:
    """At the start of a loop: count its steps from 0, and read :data:`TEST_SIGNALS` when it
    changed (an entry already sent in this process is not sent again)."""
    _FLAG.steps = 0
    text = os.environ.get(TEST_SIGNALS, "")
    if text == (_FLAG.armed or ""):
        return
    _FLAG.armed, _FLAG.signals = None, []
    signals = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        step, _, name = entry.partition(":")
        name = name.strip().upper()
        number = getattr(signal, name if name.startswith("SIG") else "SIG" + name, None)
        if not step.strip().isdigit() or not isinstance(number, signal.Signals):
            raise ValueError(f"{TEST_SIGNALS}={text!r}: expected STEP:SIGNAL[,STEP:SIGNAL...], e.g. 12:INT or "
                             "12:INT,12:INT or 50:KILL")
        signals.append((int(step), number))
    if signals and os.getpgid(0) != os.getsid(0):
        raise RuntimeError(f"{TEST_SIGNALS} signals this process's group: start the process in a session of its "
                           "own (subprocess start_new_session=True), never in the test runner's")
    _FLAG.armed, _FLAG.signals = text, sorted(signals, key=lambda entry: entry[0])


def _send_test_signals() -> None:
    _FLAG.steps += 1
    while _FLAG.signals and _FLAG.signals[0][0] <= _FLAG.steps:
        _, number = _FLAG.signals.pop(0)
        if os.environ.get("RANK", "0") == "0":
            os.killpg(os.getpgid(0), number)


@contextmanager
def graceful_stop(announce: bool = True) -> Iterator[None]:
    """Within the block, the first Ctrl-C sets :func:`requested` (and says so on rank 0 when
    ``announce``); the second raises :class:`StoppedAtOnce`. Does nothing unless :func:`enable` was
    called (here or in a parent process), outside the main thread, or when someone else handles
    SIGINT."""
    usable = (os.environ.get(SWITCH) == "1" and threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    _arm_test_signals()
    if not usable:
        yield
        return

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked child (a DataLoader worker): its parent decides
            return
        if _FLAG.raised:
            raise StoppedAtOnce(AT_ONCE)
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
