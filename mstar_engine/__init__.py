"""mstar engine: exponential-family diffusion (M-Star, star-shaped, DDPM). Importable without click."""

__version__ = "0.1.0"
