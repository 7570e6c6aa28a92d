"""Progressive distillation (MATH.md §3): students that make one network evaluation where their
teacher makes two, stage after stage (T → T/2 → … → K).

- :mod:`.stages`: the stage step counts and their errors;
- :mod:`.targets`: the regression target (teacher's prediction after its first segment, or the
  Gaussian "landing" target of Salimans & Ho) and the target error;
- :mod:`.loop`: one resumable stage;
- :mod:`.pipeline`: every stage of a run, and the students as sampling models.
"""
from mstar_engine.distill.stages import DistillError, derive_stages

__all__ = ["DistillError", "derive_stages"]
