"""Progressive distillation: stage step counts, regression targets, the resumable stage loop.

Students make one network evaluation where their teacher makes two, stage after stage
(T → T/2 → … → K; MATH.md §3). Every stage of a run: :mod:`mstar_engine.app.distill`.

- :mod:`.stages`: the stage step counts and their errors;
- :mod:`.targets`: the regression target (teacher's prediction after its first segment, or the
  Gaussian "landing" target of Salimans & Ho) and the target error;
- :mod:`.loop`: one resumable stage.
"""
from mstar_engine.distill.stages import DistillError, derive_stages

__all__ = ["DistillError", "derive_stages"]
