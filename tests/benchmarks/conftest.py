"""What the benchmark smoke tests share: benchmarks/nfe.py loaded as a module, and torch's thread
count restored after a benchmark sets it."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def nfe():
    spec = importlib.util.spec_from_file_location("nfe_benchmark", ROOT / "benchmarks" / "nfe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
