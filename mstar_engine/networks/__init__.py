"""MLP and U-Net backbones, time embedding, the Denoiser wrapper (inputs, head, guidance).

The :class:`Denoiser` wrapper builds the network inputs from (s_t, x_t, t) and applies the family's head."""
from mstar_engine.networks.denoiser import (
    INPUT_MODES,
    Denoiser,
    build_mlp_denoiser,
    drop_labels,
    input_features,
)
from mstar_engine.networks.embedding import scaled_time, sinusoidal_embedding
from mstar_engine.networks.mlp import MLP, mlp_parameter_count

__all__ = [
    "INPUT_MODES",
    "MLP",
    "Denoiser",
    "build_mlp_denoiser",
    "drop_labels",
    "input_features",
    "mlp_parameter_count",
    "scaled_time",
    "sinusoidal_embedding",
]
