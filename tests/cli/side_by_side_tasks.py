"""Tasks for tests/cli/test_side_by_side.py, importable by the processes it spawns (pytest's
importlib mode leaves the test module itself unimportable by name)."""
from __future__ import annotations

import os

from mstar_engine.util.interrupt import Interrupted


def works(value, log):
    log(f"working on {value}")
    return value * 2


def fails(log):
    raise ValueError("this model cannot be trained: fix its spec")


def stops(log):
    raise Interrupted("stopped by Ctrl-C after training step 3 of 8; the checkpoint is written")


def exits(log):
    os._exit(3)
