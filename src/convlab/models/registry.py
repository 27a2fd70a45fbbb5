"""The model registry, a leaf: presets register by decorator, and families (torchvision, timm) register a
resolver that finds their models by name. The package's __init__ imports the modules that register."""
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


@dataclass(frozen=True)
class ModelFamily:
    """Models found by name rather than registered one by one: resolve(name) -> an entry or None."""

    name: str
    resolve: Callable[[str], "ModelEntry | None"]
    names: Callable[[], list[str]]  # what `convlab models` lists and suggestions draw from


FAMILIES: list[ModelFamily] = []


def register_family(family: ModelFamily) -> ModelFamily:
    FAMILIES.append(family)
    return family


def register_model(name: str, description: str):
    """Decorator: register a preset builder under `name`."""

    def wrap(builder: Builder) -> Builder:
        PRESETS[name] = ModelEntry(name, builder, description, "preset")
        return builder

    return wrap


def find_model(name: str) -> ModelEntry:
    """Look a model up by name; unknown names get the nearest suggestions."""
    if name in PRESETS:
        return PRESETS[name]
    for family in FAMILIES:
        entry = family.resolve(name)
        if entry is not None:
            return entry
    known = list(PRESETS) + [n for family in FAMILIES for n in family.names()]
    close = difflib.get_close_matches(name, known, n=3)
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
    """Presets first, then the models each family lists (every torchvision classifier)."""
    return list(PRESETS.values()) + [family.resolve(n) for family in FAMILIES for n in family.names()]
