"""Reverse samplers as plain functions over an explicit step grid."""
from mstar_engine.sampling.samplers import Denoiser, reverse_step, sample, step_grid

__all__ = ["Denoiser", "reverse_step", "sample", "step_grid"]
