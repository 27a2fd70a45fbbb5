"""Fixtures for the scratch engine's tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits  # installed with scikit-learn


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The parity tests run tiny float64 problems: one BLAS/torch thread each is fastest, and on a busy
    machine extra threads spin-wait for cores (a 20x slowdown measured on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
