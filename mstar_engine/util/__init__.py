"""Small utilities every layer may use: atomic writes, the on-disk cache, durations, devices, Ctrl-C."""
