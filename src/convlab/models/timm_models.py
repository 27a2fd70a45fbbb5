"""timm models by name (timm:NAME), when the optional timm package is installed (pip install 'convlab[timm]')."""
from __future__ import annotations

from torch import nn

from ..errors import ConvlabError
from .registry import ModelEntry, ModelFamily, register_family

PREFIX = "timm:"


def require_timm(what: str):
    try:
        import timm
    except ImportError:
        raise ConvlabError(f"{what} needs the timm package: pip install 'convlab[timm]'") from None
    return timm


def builder_for(name: str):
    """A registry builder for timm:NAME; the head is sized to the classes, the input to the channels."""

    def build(in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float) -> nn.Module:
        timm = require_timm(f"model {PREFIX}{name}")
        if name not in timm.list_models(name):
            raise ConvlabError(f"unknown model '{PREFIX}{name}': timm has no model {name!r}")
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels,
                                 drop_rate=dropout)

    return build


def _resolve(name: str) -> ModelEntry | None:
    if name.startswith(PREFIX):
        return ModelEntry(name, builder_for(name[len(PREFIX):]), "timm model", "timm")
    return None


register_family(ModelFamily("timm", _resolve, lambda: []))  # thousands of names: listed by timm itself
