"""The processes of one run and the few collectives training needs.

A :class:`Group` is this process's place in a data-parallel run: its rank, the number of processes
(``world``), and sums over them. ``SINGLE`` (rank 0 of 1) makes every collective a no-op, so the
training loop has one code path. The split keeps results independent of the number of processes:
every process builds the global batch's inputs exactly as a single process would (same data order,
same random numbers) and keeps its contiguous :meth:`Group.shard` of the examples; the loss of each
part is weighted by its share of the *global* batch, and the gradients are summed over processes,
so the summed gradient is the single-process gradient up to floating-point summation order.
"""
from __future__ import annotations

import datetime

import attrs
import torch
from torch import Tensor

#: How long a process waits for the others at a collective. Rank 0 alone samples and evaluates
#: after training, while the others wait for it before the next ``[compare]`` variant.
TIMEOUT = datetime.timedelta(hours=24)


@attrs.frozen
class Group:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This process's contiguous share of ``n`` items (``n`` divisible by ``world``)."""
        if n % self.world:
            raise ValueError(f"{n} examples do not split evenly over {self.world} processes")
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def streams(self, streams: int) -> tuple[range, bool]:
        """The random streams of a batch (contiguous parts, ``devices.processes`` of them) that this
        process builds, and whether that is all of them in a multi-process run (then it keeps its
        :meth:`shard` of the result): its own streams when the process count divides them, else all."""
        if streams % self.world == 0:
            return range(self.rank * streams // self.world, (self.rank + 1) * streams // self.world), False
        return range(streams), self.world > 1

    def sum_(self, x: Tensor) -> Tensor:
        """Sum ``x`` over the processes, in place; returns ``x``."""
        if self.world > 1:
            torch.distributed.all_reduce(x)
        return x

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over the processes: one flat all-reduce per dtype."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        for dtype in sorted({g.dtype for g in grads}, key=str):
            same = [g for g in grads if g.dtype == dtype]
            flat = self.sum_(torch.cat([g.reshape(-1) for g in same]))
            for g, part in zip(same, flat.split([g.numel() for g in same])):
                g.copy_(part.view_as(g))

    def all_gather(self, x: Tensor) -> Tensor:
        """Every process's ``x`` (same shape everywhere), concatenated along dim 0 in rank order."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        torch.distributed.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def gather(self, obj: object) -> list:
        """Every process's ``obj``, in rank order (a list of one in a single process)."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


SINGLE = Group()


def stream_key(key: int, stream: int) -> int:
    """The seed of random stream ``stream`` of a batch whose randomness is keyed ``key`` (stream 0
    keeps ``key``, so a single-stream run draws what it drew before streams existed)."""
    return key if stream == 0 else key * 7_919 + stream
