"""Start a function on several processes of one machine, or join a ``torchrun`` launch.

:func:`launch` is the one entry of every command that may use several processes: ``fn(*args,
group=Group, **kwargs)`` here (one process) or through :func:`run_processes`, which calls it on
every process and returns rank 0's result. Under ``torchrun`` (``WORLD_SIZE`` and ``RANK`` in the environment) this process is one
of them: it joins the process group torchrun set up. Otherwise it spawns ``world`` fresh
processes connected over a free local TCP port. A failure in any process stops the others, and its
exception (the original type and message, for a clear error) is raised in the caller.

Ctrl-C: the first one is the processes' (they stop after the same step and raise
:class:`~mstar_engine.util.interrupt.Interrupted`, which the caller gets from process 0, once its
checkpoint is written); a ``KeyboardInterrupt`` in any process (a second Ctrl-C, or one while
sampling) reaches the caller as that exception, and one in the caller itself stops the processes
(SIGTERM, then SIGKILL) before it goes on.

Every process on the CPU gets ``cores // processes on this machine`` threads, so the processes do
not oversubscribe the cores; on CUDA each process uses the GPU numbered by its ``LOCAL_RANK``, and
only rank 0 prints.
"""
from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, NoReturn

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mstar_engine.distributed.env import torchrun_world
from mstar_engine.util.interrupt import Interrupted, graceful_stop
from mstar_engine.distributed.group import SINGLE, TIMEOUT, Group


def launch(fn: Callable, world: int, backend: str, *args, **kwargs):
    """``fn(*args, group=SINGLE, **kwargs)`` in this process when ``world`` is 1, else
    :func:`run_processes`: the commands call this once and never relaunch themselves."""
    if world > 1:
        return run_processes(fn, world, backend, *args, **kwargs)
    return fn(*args, group=SINGLE, **kwargs)


def run_processes(fn: Callable, world: int, backend: str, *args, **kwargs):
    """``fn(*args, group=..., **kwargs)`` on ``world`` processes; rank 0's return value."""
    if torchrun_world() is not None:
        return _joined(fn, backend, args, kwargs)
    with tempfile.TemporaryDirectory(prefix="mstar-processes-") as tmp:
        context = mp.start_processes(_child, args=(world, _free_port(), backend, fn, args, kwargs, tmp),
                                     nprocs=world, join=False, start_method="spawn")
        try:
            with graceful_stop(announce=False):  # the first Ctrl-C is the processes' to handle
                while not context.join():
                    pass
        except KeyboardInterrupt:  # a second Ctrl-C here (or a first one outside mstar's graceful stop)
            stop_processes(context.processes)
            raise
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            stop_processes(context.processes)  # every process ended and reaped before the launcher goes on
            if _all_done(Path(tmp), world):  # the work was finished and synchronised; one process failed
                return _load(Path(tmp) / "result.pkl")  # while shutting down (gloo can abort at exit)
            _raise_first(exc, Path(tmp), world)
        if not _all_done(Path(tmp), world):  # every process exited with 0 before the end of the work: torch's
            _raise_first(None, Path(tmp), world)  # spawn wrapper exits 0 on a KeyboardInterrupt (Ctrl-C)
        return _load(Path(tmp) / "result.pkl")


def stop_processes(processes: list) -> None:
    """End the processes still running: SIGTERM, then SIGKILL to those alive 10 s later; Ctrl-C
    is ignored meanwhile, so that a third one cannot leave processes behind."""
    ignoring = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
    try:
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + 10
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        if ignoring:
            signal.signal(signal.SIGINT, previous)


def _raise_first(exc: BaseException | None, tmp: Path, world: int) -> NoReturn:
    """The error that stopped a launch: Ctrl-C when a process stopped on it, else the first Python
    exception raised in a process, or, when the first process to end did so without one (a signal,
    a crash), a clear ProcessStopped. The errors the others may have written then (a peer's
    connection reset mid-collective) are its consequences, not the cause. ``exc`` is None when every
    process exited with 0 without finishing."""
    errors = _errors(tmp, world)
    pressed = [e for e in errors if isinstance(e[2], KeyboardInterrupt)]  # stopped at once by Ctrl-C
    if pressed:
        raise min(pressed, key=lambda e: (e[0], e[1]))[2] from None
    if exc is None or isinstance(exc, mp.ProcessRaisedException):
        raised = _first_error(tmp, world)
        if exc is None and raised is None:
            raise ProcessStopped(f"the {world} processes ended before finishing their work, without an error; "
                                 "checkpoints already written are intact: run the same command again to resume")
        if exc is None:
            raise raised
        if raised is not None:  # the original exception, with the process's traceback as its cause
            raise raised from ProcessTraceback(str(exc))
        raise exc
    raise ProcessStopped(f"{exc} (one of {world} processes, without a Python error: killed, or out of memory?); "
                         "the others were stopped. Checkpoints already written are intact: run the same command "
                         "again to resume") from None


class ProcessStopped(RuntimeError):
    """A process of a multi-process launch ended without a Python exception (a signal, a crash)."""


class ProcessTraceback(Exception):
    """The traceback text of an exception raised in another process (shown by ``--debug``)."""


def log_to_stderr(line: str) -> None:
    """The log of a spawned process (a lambda of the caller's would not pickle)."""
    print(line, file=sys.stderr, flush=True)


def _joined(fn: Callable, backend: str, args: tuple, kwargs: dict):
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    os.environ.setdefault("LOCAL_WORLD_SIZE", str(world))
    _set_up(rank, local, backend)
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        result = fn(*args, group=Group(rank, world), **kwargs)
        dist.barrier()  # leave together: a process that tears down early can abort its peers' transport
        return result
    except Interrupted as exc:  # torchrun stops the others when one ends: not before process 0's checkpoint
        _leave_together(exc)
        raise
    finally:
        dist.destroy_process_group()


def _child(rank: int, world: int, port: int, backend: str, fn: Callable, args: tuple, kwargs: dict,
           tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    _set_up(rank, rank, backend)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=TIMEOUT)
    try:
        result = fn(*args, group=Group(rank, world), **kwargs)
        if rank == 0:
            _dump(Path(tmp) / "result.pkl", result)
        dist.barrier()  # leave together: a process that tears down early can abort its peers' transport
        (Path(tmp) / f"done-{rank}").touch()  # the work is finished and synchronised
    except BaseException as exc:
        _dump(Path(tmp) / f"error-{rank}.pkl", (time.time_ns(), picklable(exc)))
        _leave_together(exc)
        raise
    finally:
        dist.destroy_process_group()


def _leave_together(exc: BaseException) -> None:
    """After a graceful stop, which every process makes after the same step, wait for the others:
    the launcher stops the processes still running when the first one ends, and process 0 may still
    be writing the checkpoint of that step (and its error, which names it)."""
    if isinstance(exc, Interrupted):
        try:
            dist.barrier()
        except Exception:  # noqa: BLE001 - a process that failed otherwise: the launcher reports that
            pass


def _set_up(rank: int, local_rank: int, backend: str) -> None:
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    else:  # the cores of this machine shared by its processes (LOCAL_WORLD_SIZE: torchrun's, or ours)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    if rank != 0:  # one process prints: the others' output would repeat rank 0's
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dump(path: Path, obj: object) -> None:
    partial = path.with_suffix(".partial")  # the parent stops the other processes: never leave half a file
    partial.write_bytes(pickle.dumps(obj))
    os.replace(partial, path)


def picklable(exc: BaseException) -> BaseException:
    """``exc``, or where it does not survive pickling (exceptions with their own ``__init__`` may
    pickle but not unpickle) a RuntimeError with its type and message, for another process."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - an exception that does not pickle still gets its message across
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _load(path: Path):
    return pickle.loads(path.read_bytes()) if path.is_file() else None


def _all_done(tmp: Path, world: int) -> bool:
    """Whether every process finished its work and passed the final barrier (and rank 0's result
    was written): a failure after that is one of shutting down."""
    return all((tmp / f"done-{rank}").is_file() for rank in range(world)) and (tmp / "result.pkl").is_file()


def _errors(tmp: Path, world: int) -> list[tuple[int, int, BaseException]]:
    """(time, rank, exception) of every process that wrote one."""
    loaded = [(rank, _load(tmp / f"error-{rank}.pkl")) for rank in range(world)]
    return [(e[0], rank, e[1]) for rank, e in loaded if e is not None]


def _first_error(tmp: Path, world: int) -> BaseException | None:
    """The exception raised first: the others are usually the processes that lost it mid-collective.
    A graceful stop (every process raises Interrupted after the same step) is process 0's: its
    message names the checkpoint it wrote."""
    errors = _errors(tmp, world)
    if not errors:
        return None
    first = min(errors, key=lambda e: (e[0], e[1]))[2]
    if isinstance(first, Interrupted):
        first = next((e for _, rank, e in errors if rank == 0 and isinstance(e, Interrupted)), first)
    return first
