"""Finite-difference gradient checks: the slow, assumption-free way to test a backward pass."""
from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, (f(x + h) - f(x - h)) / 2h, one element at a time (x is changed
    in place and restored). Use float64."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = f()
        x[i] = old - h
        minus = f()
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max(|a|, |b|, tiny): scale-free, 0 for identical arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0), 1e-300)
    return float(np.abs(a - b).max(initial=0.0) / scale)


def check_layer(layer, x: np.ndarray, h: float = 1e-6, seed: int = 12345) -> dict[str, float]:
    """Compare a layer's backward pass with finite differences of sum(layer(x) * R) for a random R.

    Returns the relative error for the input ("x") and for each parameter by name.
    """
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(layer(x).shape)

    def loss() -> float:
        return float((layer(x) * weights).sum())

    layer.zero_grad()
    layer(x)
    dx = layer.backward(weights)
    errors = {"x": relative_error(dx, numerical_gradient(loss, x, h))}
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}
    for name, p in layer.named_parameters():
        errors[name] = relative_error(analytic[name], numerical_gradient(loss, p.data, h))
    return errors
