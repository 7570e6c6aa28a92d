"""The library: exponential-family diffusion (M-Star, star-shaped, DDPM); never imports click.

Python API: ``load_run(run_dir).sample(n, steps)`` and ``save_samples(path, x)`` (:mod:`mstar_engine.app.runs`).
"""

__version__ = "0.1.0"

__all__ = ["load_run", "save_samples"]


def __getattr__(name: str):
    """``from mstar_engine import load_run`` without importing torch for ``mstar validate``."""
    if name in __all__:
        from mstar_engine.app import runs
        return getattr(runs, name)
    raise AttributeError(f"module 'mstar_engine' has no attribute {name!r}")
