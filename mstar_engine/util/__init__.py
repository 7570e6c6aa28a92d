"""Small utilities for every layer: atomic writes, on-disk cache, durations, devices, Ctrl-C, host memory."""
