"""Slow, obviously-correct nested-loop convolution and pooling: the yardstick for the fast versions.

Straight from the definitions, one output element at a time. Only for tests and small examples.
"""
from __future__ import annotations

import numpy as np


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1, padding: int = 0,
           dilation: int = 1) -> np.ndarray:
    """out[n, f, i, j] = bias[f] + sum_{c, u, v} weight[f, c, u, v] * xpad[n, c, i*s + u*d, j*s + v*d].

    x: (N, C, H, W), weight: (F, C, KH, KW) -> (N, F, Ho, Wo).
    """
    n, c, h, w = x.shape
    f, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, f, ho, wo), dtype=np.result_type(x, weight))
    for b in range(n):
        for o in range(f):
            for i in range(ho):
                for j in range(wo):
                    total = 0.0 if bias is None else bias[o]
                    for ch in range(c):
                        for u in range(kh):
                            for v in range(kw):
                                total += weight[o, ch, u, v] * xp[b, ch, i * stride + u * dilation,
                                                                  j * stride + v * dilation]
                    out[b, o, i, j] = total
    return out


def pool2d(x: np.ndarray, kernel: int, stride: int | None = None, padding: int = 0, mode: str = "max") -> np.ndarray:
    """Max or average of each kernel x kernel window. x: (N, C, H, W) -> (N, C, Ho, Wo).

    Max pooling pads with -inf (padding never wins); average pooling pads with zeros that count.
    """
    stride = stride or kernel
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)
    ho = (h + 2 * padding - kernel) // stride + 1
    wo = (w + 2 * padding - kernel) // stride + 1
    out = np.zeros((n, c, ho, wo), dtype=x.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    window = xp[b, ch, i * stride : i * stride + kernel, j * stride : j * stride + kernel]
                    out[b, ch, i, j] = window.max() if mode == "max" else window.sum() / (kernel * kernel)
    return out
