"""Fixtures of the model-kind tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """Small convolutions (the VAE's) run many times faster on one thread on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
