"""Progressive and consistency distillation: stage step counts, targets, the resumable stages.

Progressive: students make one network evaluation where their teacher makes two, stage after
stage (T → T/2 → … → K; MATH.md §3). Consistency (:mod:`.consistency`): one student made
consistent along the teacher's deterministic sampler. Every stage of a run, and reflow for flow
models: :mod:`mstar_engine.app.distill`, :mod:`mstar_engine.app.reflow`.

- :mod:`.stages`: the stage step counts and their errors;
- :mod:`.targets`: the regression target (teacher's prediction after its first segment, or the
  Gaussian "landing" target of Salimans & Ho) and the target error;
- :mod:`.loop`: one resumable progressive stage;
- :mod:`.consistency`: the consistency stage, its boundary parametrisation and loss.
"""
from mstar_engine.distill.stages import DistillError, derive_stages

__all__ = ["DistillError", "derive_stages"]
