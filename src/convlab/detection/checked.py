"""Loading a state dict into a detector or a backbone strictly, with a one-line refusal naming what differs."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConvlabError


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], where: str, architecture: str) -> None:
    """Load `state` into `model` strictly, or refuse in one line naming the first keys that differ.

    BatchNorm's num_batches_tracked may be absent (torchvision's detection weights use frozen BatchNorm)."""
    expected = model.state_dict()
    optional = lambda k: k.endswith("num_batches_tracked")  # noqa: E731
    missing = sorted(k for k in expected if k not in state and not optional(k))
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
                    if k in state and state[k].shape != expected[k].shape)
    parts = [f"{label} {', '.join(keys[:3])}{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected),
                                 ("wrong shape (file vs model)", shapes)) if keys]
    if parts:
        raise ConvlabError(f"{where} does not fit {architecture}: {'; '.join(parts)}; give a state dict saved "
                           f"from that architecture")
    model.load_state_dict(state, strict=False)
