"""The interface every model kind implements: what the training loop, the samplers and the run
files need of a model, and nothing else.

A kind says how training draws its inputs from a batch of x0 (:meth:`Kind.draw`: no network, a
pure function of the generators, so a resumed run is exact), what it regresses
(:meth:`Kind.training_loss`: the network calls and the per-example loss), and how it samples with a given
number of network evaluations (:meth:`Kind.sample_batch`). Its checkpointed state is the network's
``state_dict`` and, for the learned M-Star coupling, ``learned`` (trained beside the network).

The kinds: the exponential-family diffusion (star-shaped / M-Star, :mod:`.exponential`), flow
matching / rectified flow (:mod:`.flow`), the energy-score distributional denoiser
(:mod:`.energy`) and the VAE baseline (:mod:`.vae`). Each has a ``family`` (for the latter three
the Gaussian family: R^d data, its ``steps`` the finest sampling grid) that gives the event shape
and dtype.

The VAE bends two of these rules, each documented on it: its network is called both as
``net(x0, eps)`` (the per-example negative ELBO, in training and anomaly scoring) and as
``net(z)`` (the decoded image, in sampling), and its sampler makes one network evaluation
whatever ``evaluations`` says (its class attribute ``evaluations = 1``). A kind with its own
anomaly score has a method ``anomaly_scores(denoiser, x, *, draws, batch_size, generator)``
(:func:`mstar_engine.metrics.anomaly.anomaly_scores` uses it).
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor

#: ``net(*inputs, labels=None)``: the network under the training's autocast.
Network = Callable[..., Tensor]


class Kind(Protocol):
    name: str                      # the ``process.kind`` value
    family: object                 # event_shape, dtype, steps (the finest grid), domain
    learned: torch.nn.Module | None
    inputs: str                    # what the network reads (shown in results tables)
    coupling_kind: str             # the results tables' "coupling" column
    notes: tuple[str, ...]

    def block_state(self) -> Tensor | None:
        """What a block of training draws is made with, read at the block's start and kept in the
        checkpoint (the learned coupling's ρ_t); None when nothing is."""

    def draw(self, x0: Tensor, k: int, state: Tensor | None, generator: torch.Generator,
             noise: torch.Generator) -> tuple[Tensor, ...]:
        """Training inputs of ``k`` points per example of ``x0`` (B, ...): tensors shaped (B, k, ...).
        ``generator`` is a CPU generator, ``noise`` one on x0's device (the same one on the CPU)."""

    def training_loss(self, net: Network, x0: Tensor, drawn: tuple[Tensor, ...], labels: Tensor | None,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Per-example (reported, optimised) losses of flattened draws (B·k, ...) with x0 repeated
        to match; ``generator``: the step's own stream (Monte Carlo noise of a loss)."""

    def rho(self) -> Tensor:
        """The coupling a sampler uses by default (exponential family); else zeros."""

    def sample_batch(self, net: Callable[..., Tensor], n: int, evaluations: int, rho: Tensor | None,
                     generator: torch.Generator, device: torch.device, final: str,
                     frames: Callable[[Tensor], None] | None = None) -> Tensor:
        """``n`` samples (float64) with ``evaluations`` calls of ``net(*inputs)``; ``frames(x)`` sees
        the model's current picture of the sample after each call (x̂0, or the ODE state)."""


class DataSpaceKind:
    """What flow matching, the energy-score model and the VAE share: they work in the data space of
    their (Gaussian) family, have no coupling and no tail normalisation."""
    inputs = "state"
    learned = None
    notes: tuple[str, ...] = ()
    needs_tail_norm = False
    noise_input = False            # whether the network also reads a noise vector ξ (the energy score)

    def block_state(self) -> None:
        return None

    def rho(self) -> Tensor:
        return torch.zeros(self.family.steps + 1, dtype=torch.float64)
