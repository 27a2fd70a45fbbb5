"""The parity helper: run one computation through torch (float64) and compare with the scratch engine."""
from __future__ import annotations

import numpy as np
import torch

from convlab.scratch.gradcheck import relative_error

TOLERANCE = 1e-10  # relative error allowed between the engines in float64


def torch_run(fn, *arrays, dout=None, seed=0):
    """fn(*tensors) -> tensor. Returns (output, upstream gradient used, [gradient of each array])."""
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    if dout is None:
        dout = np.random.default_rng(seed).standard_normal(tuple(out.shape))
    out.backward(torch.tensor(dout, dtype=torch.float64))
    return out.detach().numpy(), dout, [t.grad.numpy() for t in tensors]


def assert_close(actual, expected, tolerance=TOLERANCE, what=""):
    assert np.shape(actual) == np.shape(expected), f"{what}: shape {np.shape(actual)} != {np.shape(expected)}"
    error = relative_error(actual, expected)
    assert error < tolerance, f"{what}: relative error {error:.3g} >= {tolerance}"
