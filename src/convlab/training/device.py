"""Choosing the device to train on."""
from __future__ import annotations

import torch

from ..errors import ConvlabError


def pick_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu; an explicit choice that is not available is an error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise ConvlabError("--device cuda: no CUDA GPU is available here; use --device auto or --device cpu")
    if name == "mps" and not mps:
        raise ConvlabError("--device mps: Apple's MPS backend is not available here; use --device auto or cpu")
    return torch.device(name)
