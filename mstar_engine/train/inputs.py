"""Training inputs of a block of optimiser steps: data and the model kind's draws for it.

The inputs of optimiser steps [index·R, (index+1)·R) (R = :data:`ROLLOUT_BLOCK`) are built
together: R batches from the data stream and one draw of the kind's inputs per random stream
(the exponential family's: K steps t per example and a roll-out). Draws need no network, so their
per-call overhead is paid once per block. Every draw is a pure function of (seed, block index, stream), which makes a resumed run exact.

Roll-out streams: the examples of every batch are split into ``streams`` contiguous parts
(``devices.processes``), each drawn from its own generator. A process of a multi-process run
builds only its own streams when the process count divides ``streams`` (its shard of every batch
is exactly their examples), and otherwise builds every stream and keeps its shard; either way it
gets the single-process inputs of its shard.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from mstar_engine.data.stream import Stream
from mstar_engine.util.devices import generator, to_device
from mstar_engine.distributed.group import Group, stream_key

#: Optimiser steps whose roll-outs are simulated in one call. A learned coupling's ρ is read at the
#: block's start.
ROLLOUT_BLOCK = 16


class BlockInputs:
    """``inputs(index, state)``: per optimiser step of block ``index``, x0 of this process's shard
    (b, ...), the kind's draws for it (:meth:`~mstar_engine.kinds.base.Kind.draw`, each (b, K, ...);
    the exponential family's are t, x_t, s_t) and the labels of the whole batch (None when
    unlabelled), which the loop drops per batch before sharding them. ``state``: the kind's block
    state (the learned coupling's ρ_t)."""

    def __init__(self, kind, batches: Callable[[int], Iterator], batch_size: int, t_per_rollout: int,
                 seed: int, device: torch.device, group: Group, streams: int = 1) -> None:
        if batch_size % streams or streams % group.world and batch_size % group.world:
            raise ValueError(f"train.batch_size {batch_size} does not split into {streams} roll-out streams and "
                             f"{group.world} processes")
        self.kind, self.stream, self.b, self.k = kind, Stream(batches), batch_size, t_per_rollout
        self.seed, self.device, self.group, self.streams = seed, device, group, streams
        self.built, self.keep_shard = group.streams(streams)

    def __call__(self, index: int, state: Tensor | None) -> list[tuple[Tensor, tuple[Tensor, ...], Tensor | None]]:
        R, b, device = ROLLOUT_BLOCK, self.b, self.device
        drawn = [self.stream.batch_at((index * R + j) * b, b) for j in range(R)]
        pairs = isinstance(drawn[0], (tuple, list))
        labelled = pairs and drawn[0][1] is not None
        x0 = to_device(torch.cat([d[0] for d in drawn] if pairs else drawn), device)
        labels = list(torch.cat([d[1] for d in drawn]).chunk(R)) if labelled else [None] * R
        per = b // self.streams
        parts = []
        for j in self.built:  # rows of stream j: examples [j·per, (j+1)·per) of each of the R batches
            key = stream_key(self.seed * 1_000_003 + index, j)
            g = torch.Generator().manual_seed(key)
            if self.streams == 1:
                x0_j = x0
            else:
                rows = (torch.arange(R)[:, None] * b + j * per + torch.arange(per)[None, :]).reshape(-1)
                x0_j = x0[rows.to(device)]
            drawn = self.kind.draw(x0_j, self.k, state, g, g if device.type == "cpu" else generator(device, key))
            parts.append([t.unflatten(0, (R, per)) for t in (x0_j, *drawn)])
        joined = [torch.cat([p[i] for p in parts], dim=1) for i in range(len(parts[0]))]  # (R, built·per, ...)
        if self.keep_shard:  # every stream built here: keep this process's shard
            mine = self.group.shard(b)
            joined = [t[:, mine] for t in joined]
        return [(joined[0][j], tuple(t[j] for t in joined[1:]), labels[j]) for j in range(R)]
