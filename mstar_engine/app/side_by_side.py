"""Independent model runs (a spec and its ``[compare]`` variants) side by side on the CPU.

Small networks leave most of a multi-core CPU idle inside one process (a 512-wide MLP on a batch of
128 scales poorly past one thread), so the models of a ``[compare]`` spec train faster at the same
time, each in a spawned process with its share of the threads (:func:`jobs_for`): on 2 cores the
quick start's three models take about 0.65 of the time they take one after the other. Each model
is a complete run in its own directory, exactly as when run alone (resumable; the results do not
depend on the number of jobs beyond the last digits that a different thread count may change).

Log lines carry the model's name. Ctrl-C reaches every process (one process group): each training
loop stops after its step and writes its checkpoint (the first Ctrl-C), no further model starts, and
the caller gets :class:`~mstar_engine.util.interrupt.Interrupted` once every process has ended; a
second Ctrl-C stops the processes at once (SIGTERM, then SIGKILL), their last checkpoints usable.
A failure in one model lets the models already running finish (no other starts), then is raised
in the caller with its type and message.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from contextlib import contextmanager
from multiprocessing.connection import wait
from typing import Callable, Iterator

import torch

from mstar_engine.distributed.launch import ProcessStopped, picklable, stop_processes
from mstar_engine.util.devices import training_device
from mstar_engine.util.interrupt import Interrupted, graceful_stop, pressed


#: With devices.jobs = 0 (auto), models that train for fewer optimiser steps run one after the
#: other: they finish in about the time a spawned process takes to start (importing torch).
AUTO_MIN_STEPS = 1000


def jobs_for(plans: list, setting: int, threads: int | None = None) -> int:
    """How many of ``plans`` run at a time: ``devices.jobs`` when set (≥ 1), else (0, auto) one per
    model up to the threads torch may use, when each trains for at least :data:`AUTO_MIN_STEPS`
    steps; always 1 for a single model, a model on an accelerator or one with several processes."""
    threads = torch.get_num_threads() if threads is None else threads
    if len(plans) < 2 or any(p.devices.processes > 1 or training_device(p.spec.devices.accelerator).type != "cpu"
                             for p in plans):
        return 1
    if setting == 0 and any((p.stages[0].optimizer_steps or AUTO_MIN_STEPS) < AUTO_MIN_STEPS for p in plans):
        return 1
    return min(len(plans), setting or threads)


def run_side_by_side(tasks: list[tuple[str, Callable, tuple, dict]], jobs: int,
                     log: Callable[[str], None]) -> list:
    """``fn(*args, log=..., **kwargs)`` for each (name, fn, args, kwargs), ``jobs`` at a time in
    spawned processes with an equal share of torch's threads each; their results in that order."""
    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")
    pending, running, results, errors = list(enumerate(tasks)), {}, {}, []
    try:
        with graceful_stop(announce=False):  # the first Ctrl-C is the training loops'
            while pending or running:
                while pending and len(running) < jobs and not pressed() and not errors:
                    index, (name, fn, args, kwargs) = pending.pop(0)
                    receive, send = context.Pipe(duplex=False)
                    process = context.Process(target=_child, args=(name, fn, args, kwargs, threads, send),
                                              name=f"mstar-{name}")
                    with _thread_limits(threads):  # read at the child's start (OpenMP, BLAS pools)
                        process.start()
                    send.close()  # the child's end: EOF here when it exits without a word
                    running[receive] = (index, name, process)
                    log(f"[{name}] started ({threads} thread{'s' if threads > 1 else ''})")
                if not running:
                    break
                for receive in wait(list(running)):  # a result, an error, or EOF
                    index, name, process = running.pop(receive)
                    outcome = _receive(receive)
                    process.join()
                    if outcome is None:
                        errors.append(ProcessStopped(
                            f"the run of {name} ended without a result (exit code {process.exitcode}: killed, or "
                            "out of memory?); checkpoints already written are intact: run the same command again "
                            "to resume"))
                    elif outcome[0] == "error":
                        errors.append(outcome[1])
                    else:
                        results[index] = outcome[1]
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        stop_processes([process for *_, process in running.values()])
        raise
    if errors:
        at_once = [e for e in errors if isinstance(e, KeyboardInterrupt)]
        stopped = [e for e in errors if isinstance(e, Interrupted)]
        raise (at_once or stopped or errors)[0]
    if pending:  # Ctrl-C between two models: the finished ones are complete runs
        raise Interrupted(f"stopped by Ctrl-C before {', '.join(task[0] for _, task in pending)} started; "
                          "run the same command again to go on")
    return [results[index] for index in range(len(tasks))]


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextmanager
def _thread_limits(threads: int) -> Iterator[None]:
    """The environment a spawned child starts with: its thread pools sized to its share."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _receive(connection) -> tuple[str, object] | None:
    try:
        return connection.recv()
    except EOFError:
        return None
    finally:
        connection.close()


def _child(name: str, fn: Callable, args: tuple, kwargs: dict, threads: int, send) -> None:
    torch.set_num_threads(threads)

    def log(line: str) -> None:
        print(f"[{name}] {line}", file=sys.stderr, flush=True)

    try:
        outcome = ("ok", fn(*args, log=log, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller, Ctrl-C included
        outcome = ("error", picklable(exc))
    send.send(outcome)
    send.close()
