"""The inputs with their information removed, that perturbation methods and the faithfulness scores use."""
from __future__ import annotations

import torch
from torchvision.transforms.functional import gaussian_blur


def blurred(inputs: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> the same, Gaussian-blurred with sigma = 1/8 of the longer side (RISE's "removed" pixels).

    Blurring is linear, so it commutes with the per-channel normalization: blur the normalized input directly.
    """
    sigma = max(inputs.shape[2:]) / 8
    radius = min(int(round(2 * sigma)), min(inputs.shape[2:]) - 1)  # reflect padding needs radius < side
    return gaussian_blur(inputs, [2 * radius + 1] * 2, [sigma, sigma])
