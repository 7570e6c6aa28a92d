"""Training: the resumable-stage skeleton, the training loop, LR/EMA schedules, atomic checkpoints."""
