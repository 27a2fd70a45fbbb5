"""The classifier heads a fine-tune puts on a backbone (--head), registered by name and parsed from one spec.

`linear` keeps the Linear layer the model was built with (sized for the new classes); `mlp:WIDTH[,dropout=P]`
is the texts' Keras head (GlobalAveragePooling2D -> Dense(WIDTH, relu) -> Dense(classes)): the backbone's own
global pooling, then Linear(WIDTH) -> ReLU -> [Dropout(P)] -> Linear(classes). The spec is saved in the run's
config (finetune.head), so load_run rebuilds the same architecture.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import ConvlabError
from .freeze import head_name


class MLPHead(nn.Sequential):
    """Linear(in, width) -> ReLU -> Dropout(p) -> Linear(width, classes): keys 0.* and 3.* in the state dict."""

    is_classifier_head = True  # models.freeze.head_name takes the whole of it as the head

    def __init__(self, in_features: int, width: int, num_classes: int, dropout: float = 0.0):
        super().__init__(nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(width, num_classes))


@dataclass(frozen=True)
class HeadSpec:
    kind: str  # a name in HEADS
    width: int = 0
    dropout: float = 0.0


# A head builder gets the spec, the classifier layer the model was built with and the class count.
HeadBuilder = Callable[[HeadSpec, nn.Module, int], nn.Module]
HEADS: dict[str, HeadBuilder] = {}


def register_head(name: str):
    """Decorator: register a head builder under `name` (the part of --head before the colon)."""

    def wrap(fn: HeadBuilder) -> HeadBuilder:
        HEADS[name] = fn
        return fn

    return wrap


@register_head("linear")
def linear_head(spec: HeadSpec, built: nn.Module, num_classes: int) -> nn.Module:
    return built  # create_model already sized it for the new classes


@register_head("mlp")
def mlp_head(spec: HeadSpec, built: nn.Module, num_classes: int) -> nn.Module:
    if not isinstance(built, nn.Linear):
        raise ConvlabError(f"--head mlp: the model's classifier is a {type(built).__name__}, not a Linear layer "
                           f"after global pooling; use --head linear")
    return MLPHead(built.in_features, spec.width, num_classes, spec.dropout)


def parse_head(spec: str) -> HeadSpec:
    """'linear' | 'mlp:WIDTH' | 'mlp:WIDTH,dropout=P' -> a HeadSpec; anything else is refused by name."""
    usage = "use linear, mlp:WIDTH or mlp:WIDTH,dropout=P (e.g. mlp:1024,dropout=0.5)"
    if spec == "linear":
        return HeadSpec("linear")
    match = re.fullmatch(r"mlp:(\d+)(?:,dropout=(\d+(?:\.\d*)?|\.\d+))?", spec.replace(" ", ""))
    if not match:
        raise ConvlabError(f"--head {spec!r}: not a head convlab knows; {usage}")
    width, dropout = int(match.group(1)), float(match.group(2) or 0.0)
    if width < 1 or not 0.0 <= dropout < 1.0:
        raise ConvlabError(f"--head {spec}: WIDTH must be at least 1 and dropout in [0, 1); {usage}")
    return HeadSpec("mlp", width, dropout)


def put_head(model: nn.Module, spec: str, num_classes: int) -> nn.Module:
    """Replace the model's classifier layer by the head `spec` names (in place); returns the model."""
    head = parse_head(spec)
    name = head_name(model)
    built = model.get_submodule(name)
    new = HEADS[head.kind](head, built, num_classes)
    if new is not built:
        model.set_submodule(name, new)
    return model
