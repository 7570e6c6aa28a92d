"""Reverse samplers as plain functions over an explicit step grid (block rule)."""
from mstar_engine.sampling.samplers import Denoiser, reverse_step, sample, step_grid

__all__ = ["Denoiser", "reverse_step", "sample", "step_grid"]
