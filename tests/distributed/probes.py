"""Functions run in spawned processes by test_processes.py (importable by name in the children)."""
from __future__ import annotations

import torch

from mstar_engine.data.offline import DataError


def collectives(scale: float, *, group):
    """Each collective once; returns what rank 0 saw."""
    x = torch.tensor([float(group.rank + 1), scale])
    group.sum_(x)
    a = torch.nn.Parameter(torch.zeros(2, 3))
    b = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    unused = torch.nn.Parameter(torch.zeros(1))
    a.grad = torch.full((2, 3), float(group.rank + 1))
    b.grad = torch.arange(4, dtype=torch.float64) * (group.rank + 1)
    group.sum_gradients([a, unused, b])
    group.barrier()
    return {"sum": x.tolist(), "gathered": group.gather(group.rank * 10), "a": a.grad.tolist(),
            "b": b.grad.tolist(), "unused": unused.grad, "shard": (group.shard(8).start, group.shard(8).stop),
            "world": group.world, "threads": torch.get_num_threads()}


def fail_on(rank: int, *, group):
    if group.rank == rank:
        raise DataError(f"process {rank} could not read its data")
    group.barrier()  # the other process waits here until it is stopped
    return "finished"


def killed_on(rank: int, *, group):
    import os
    import signal
    if group.rank == rank:
        os.kill(os.getpid(), signal.SIGKILL)
    group.barrier()
    return "finished"


def aborts_at_exit(rank: int, *, group):
    """Finishes its work, then process ``rank`` aborts while shutting down (as gloo sometimes does:
    "terminate called without an active exception")."""
    if group.rank == rank:
        import atexit
        import os
        atexit.register(os.abort)
    return "finished"


def interrupts_parent(folder: str, *, group):
    """Process 0 sends SIGINT to the launching process (Ctrl-C reaching the launcher alone); every
    process then waits (at most 5 minutes) to be stopped, each having written its pid first."""
    import os
    import signal
    import time
    from pathlib import Path
    (Path(folder) / f"pid-{group.rank}").write_text(str(os.getpid()))
    group.barrier()  # both processes are running and have written their pid
    if group.rank == 0:
        os.kill(os.getppid(), signal.SIGINT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.5)
    return "not stopped"
