"""The residual MLP backbone of the published SS-DDPM synthetic/geodesic experiments.

Structure (SS-DDPM notes §5 "MLP", the published ``lib/models/mlp``)::

    h = SiLU(Linear(in_features + time_dim → hidden)([x ‖ sinusoidal(t)]))      # encode
    h = h + class_embedding[label]                                               # optional
    repeat ``blocks`` times:  h = h + Dropout(SiLU(Linear(hidden → hidden)(h)))  # residual
    raw = Linear(hidden → out_features)(h)                                        # decode

The backbone returns raw outputs; the family's ``head`` (applied by
:class:`~mstar_engine.networks.denoiser.Denoiser`) maps them into the domain.

Initialisation: every ``Linear`` keeps PyTorch's default (Kaiming-uniform weights with
a = √5, i.e. U(±1/√fan_in), and U(±1/√fan_in) biases), as in the published code. The output
layer is deliberately *not* zero-initialised: heads such as vMF's ``raw/‖raw‖``, von Mises'
``atan2`` or Wishart's Cholesky map are degenerate (or constant) at raw = 0, so the model starts
from a non-degenerate, input-dependent prediction. The class embedding rows are N(0, 0.1²)
(small against the O(1) hidden activations, so conditioning starts as a perturbation) and the
last row, the "no label" entry used for classifier-free guidance, starts at zero, so the
unconditional model initially equals the plain MLP.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from mstar_engine.networks.embedding import label_embedding, resolve_labels, sinusoidal_embedding


class MLP(nn.Module):
    """Residual MLP: ``forward(x, t, labels=None) -> raw`` of shape ``(B, out_features)``.

    ``x`` is ``(B, ...)`` and is flattened to ``(B, in_features)``. ``t`` is the time already
    rescaled to [0, 1000] (:func:`~mstar_engine.networks.embedding.scaled_time`), shape ``(B,)``.
    With ``num_classes > 0`` the model is class conditional: ``labels`` are integers in
    ``0..num_classes``, where ``num_classes`` (:attr:`null_label`) — or any negative value, or
    ``labels=None`` — means "no label" (classifier-free guidance).
    """

    def __init__(self, in_features: int, out_features: int, hidden: int = 512, blocks: int = 3,
                 time_dim: int = 32, dropout: float = 0.0, num_classes: int = 0) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1 or hidden < 1:
            raise ValueError(f"MLP sizes must be positive: in {in_features}, out {out_features}, hidden {hidden}")
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        if time_dim < 2:
            raise ValueError(f"time_dim must be >= 2, got {time_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.in_features = in_features
        self.out_features = out_features
        self.hidden = hidden
        self.time_dim = time_dim
        self.num_classes = num_classes
        self.encode = nn.Sequential(nn.Linear(in_features + time_dim, hidden), nn.SiLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout)) for _ in range(blocks)
        )
        self.decode = nn.Linear(hidden, out_features)
        self.label_embedding = label_embedding(num_classes, hidden)

    @property
    def null_label(self) -> int:
        """Index of the "no label" embedding (classifier-free guidance)."""
        return self.num_classes

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        x = x.reshape(b, -1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"MLP expects {self.in_features} input features per example, got {x.shape[1]}")
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(b)
        emb = sinusoidal_embedding(t, self.time_dim).to(x.dtype)
        h = self.encode(torch.cat([x, emb], dim=1))
        if self.label_embedding is not None:
            h = h + self.label_embedding(resolve_labels(labels, b, x.device, self.num_classes))
        elif labels is not None:
            raise ValueError("labels were given to an MLP built without classes (num_classes = 0)")
        for block in self.blocks:
            h = h + block(h)
        return self.decode(h)


def mlp_parameter_count(in_features: int, out_features: int, hidden: int = 512, blocks: int = 3,
                        time_dim: int = 32, num_classes: int = 0) -> int:
    """Number of parameters of :class:`MLP` with these sizes, by hand."""
    count = (in_features + time_dim) * hidden + hidden          # encode
    count += blocks * (hidden * hidden + hidden)                 # residual blocks
    count += hidden * out_features + out_features                # decode
    if num_classes > 0:
        count += (num_classes + 1) * hidden                      # label embedding (+ "no label")
    return count
