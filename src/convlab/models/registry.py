"""The model registry: presets register by decorator; torchvision classifiers are found by name."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import ConvlabError

# A builder gets (in_channels, num_classes, (height, width), dropout) and returns the model.
Builder = Callable[[int, int, tuple[int, int], float], nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Builder
    description: str
    family: str  # "preset", "torchvision" or "timm"


PRESETS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str):
    """Decorator: register a preset builder under `name`."""

    def wrap(builder: Builder) -> Builder:
        PRESETS[name] = ModelEntry(name, builder, description, "preset")
        return builder

    return wrap


def torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def find_model(name: str) -> ModelEntry:
    """Look a model up by name; unknown names get the nearest suggestions."""
    from . import presets, torchvision_models  # noqa: F401  (registers the presets)

    if name in PRESETS:
        return PRESETS[name]
    if name.startswith("timm:"):
        from . import timm_models

        return ModelEntry(name, timm_models.builder_for(name[len("timm:"):]), "timm model", "timm")
    tv_names = torchvision_names()
    if name in tv_names:
        return ModelEntry(name, torchvision_models.builder_for(name), "torchvision classifier", "torchvision")
    close = difflib.get_close_matches(name, list(PRESETS) + tv_names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConvlabError(f"unknown model '{name}' for --model.{hint} Run 'convlab models' to list them.")


def create_model(name: str, in_channels: int, num_classes: int, image_size: tuple[int, int] | int,
                 dropout: float = 0.0) -> nn.Module:
    """Build a model for images of (in_channels, *image_size) and `num_classes` outputs.

    The model is run once on a dummy batch so that a size it cannot handle fails here, with advice,
    rather than in the middle of training.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    entry = find_model(name)
    model = entry.builder(in_channels, num_classes, tuple(image_size), dropout)
    probe = torch.zeros(2, in_channels, *image_size)
    model.eval()
    try:
        with torch.no_grad():
            out = model(probe)
    except (RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0]
        raise ConvlabError(
            f"model '{name}' cannot run on {in_channels}x{image_size[0]}x{image_size[1]} images ({reason}); "
            f"pass --image-size with a larger size (e.g. 64 or 224)") from None
    model.train()
    if out.shape != (2, num_classes):
        raise ConvlabError(f"model '{name}' gives outputs of shape {tuple(out.shape)}, expected (2, {num_classes})")
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def list_models() -> list[ModelEntry]:
    """Presets first, then every torchvision classifier."""
    from . import presets, torchvision_models  # noqa: F401

    tv = [ModelEntry(n, torchvision_models.builder_for(n), "torchvision classifier", "torchvision")
          for n in torchvision_names()]
    return list(PRESETS.values()) + tv
