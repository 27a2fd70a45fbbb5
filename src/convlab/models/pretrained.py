"""Pretrained weights: torchvision and timm sources, local weight files, and loading them with a new head.

A source says which model to build, which weights to put in it, and what input those weights expect
(channels, image size, normalization), so that fine-tuning and predict feed the model what it saw.
A convlab run folder is a source too; the session that fine-tunes reads it (it sits above this layer).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import ConvlabError
from .freeze import head_name
from .timm_models import check_hub_weights, require_timm
from .torchvision_models import torchvision_names
from .weights import WEIGHT_SUFFIXES, load_state_dict_file  # noqa: F401  (WEIGHT_SUFFIXES: also read from here)

_FILE_KINDS = "/".join(WEIGHT_SUFFIXES)  # for messages: .safetensors/.pt/.pth/.bin/.ckpt


@dataclass
class Pretrained:
    """What a fine-tune starts from."""

    source: str  # as given: RUN_DIR, torchvision:NAME, timm:NAME
    model_name: str  # the name create_model builds (resnet18, timm:resnet18, mnist-cnn, ...)
    weights: str  # which weights, for the record: an enum name, a file, "run"
    state: dict[str, torch.Tensor] | None  # None: the model is used as built (only for tests of a bare source)
    channels: int = 3
    image_size: int | None = None  # the size the weights were trained at (None: the data's own)
    mean: list[float] | None = None  # normalization the weights expect (None: measure it on the data)
    std: list[float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def normalization_from(self) -> str:
        return f"pretrained: {self.source} ({self.weights})" if self.mean is not None else "training data"


def parse_source(source: str) -> tuple[str, str]:
    """'torchvision:NAME' -> ("torchvision", NAME); 'timm:NAME' -> ("timm", NAME); anything else is a run folder."""
    kind, sep, name = source.partition(":")
    if sep and kind in ("torchvision", "timm"):
        if not name:
            raise ConvlabError(f"--from {source}: name the model, e.g. --from {kind}:resnet18")
        return kind, name
    return "run", source


# --- weight files -------------------------------------------------------------------------------------

def read_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """--weights PATH -> a state dict, read by models.weights (safetensors, or torch.load(weights_only=True): a
    file holding anything but tensors is refused before any of it runs); a "module." prefix (DataParallel)
    is removed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConvlabError(f"--weights {path}: no such file; give a {_FILE_KINDS} file, imagenet or DEFAULT")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ConvlabError(f"--weights {path}: unknown kind of file {path.suffix!r}; convlab reads "
                           f"{', '.join(WEIGHT_SUFFIXES)}")
    state = load_state_dict_file(path)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# --- loading into a model with a new head ---------------------------------------------------------------

def load_backbone(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> list[str]:
    """Load `state` into `model` except its head, which stays as built (sized for the new classes).

    Any other missing, unexpected or differently shaped key is an error that names the keys.
    Returns the head keys that were left out.
    """
    head = head_name(model)
    expected = model.state_dict()
    in_head = lambda key: key == head or key.startswith(head + ".")  # noqa: E731
    missing = sorted(k for k in expected if k not in state and not in_head(k))
    unexpected = sorted(k for k in state if k not in expected and not in_head(k))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
                    if k in state and not in_head(k) and state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape (weights vs model)",
                                                                               shapes)):
            if keys:
                more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise ConvlabError(f"{where} does not fit the model (apart from its head '{head}'): " + "; ".join(parts)
                           + ". Check that --from names the architecture these weights were saved from")
    body = {k: v for k, v in state.items() if not in_head(k)}
    model.load_state_dict(body, strict=False)
    return sorted(k for k in state if in_head(k))


# --- torchvision --------------------------------------------------------------------------------------

def torchvision_source(name: str, weights: str | None) -> Pretrained:
    """torchvision:NAME with a weights enum (downloaded into the torch hub cache) or a local file."""
    import torchvision

    if name not in torchvision_names():
        import difflib

        close = difflib.get_close_matches(name, torchvision_names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConvlabError(f"--from torchvision:{name}: torchvision has no classifier {name!r}.{hint}")
    enum = torchvision.models.get_model_weights(name)
    default = enum.DEFAULT if len(enum) else None
    source = f"torchvision:{name}"
    if weights and (weights.lower().endswith(WEIGHT_SUFFIXES) or "/" in weights):
        state, chosen = read_weights_file(weights), weights
        meta = default  # a torchvision architecture's weights expect what its own enums say
        note = f"input size and normalization as torchvision's {default}" if default else ""
    else:
        wanted = "DEFAULT" if weights in (None, "imagenet", "DEFAULT") else weights
        try:
            meta = enum[wanted] if wanted != "DEFAULT" else default
        except KeyError:
            meta = None
        if meta is None:
            names = ", ".join(["DEFAULT"] + [w.name for w in enum]) if len(enum) else "none"
            raise ConvlabError(f"--weights {weights}: {source} has no such weights; choose from {names}, or give "
                               f"a {_FILE_KINDS} file")
        state, chosen, note = _download_torchvision(meta, source), f"{meta}", ""
    pretrained = Pretrained(source, name, chosen, state, channels=3)
    if meta is not None:
        transforms = meta.transforms()
        pretrained.image_size = int(transforms.crop_size[0])
        pretrained.mean, pretrained.std = list(transforms.mean), list(transforms.std)
    if note:
        pretrained.notes.append(note)
    return pretrained


def _download_torchvision(weights, source: str) -> dict[str, torch.Tensor]:
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
        raise ConvlabError(f"--from {source}: cannot get the weights {weights} ({str(err).splitlines()[0][:120]}); "
                           f"offline, download them elsewhere and pass --weights PATH ({_FILE_KINDS})") from None


# --- timm ---------------------------------------------------------------------------------------------

def timm_source(name: str, weights: str | None) -> Pretrained:
    """timm:NAME, pretrained from timm's hub (when online) or a local weights file."""
    timm = require_timm(f"--from timm:{name}")
    if name not in timm.list_models(name):
        close = timm.list_models(f"*{name}*")[:3]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConvlabError(f"--from timm:{name}: timm has no model {name!r}.{hint}")
    bare = timm.create_model(name, pretrained=False)
    config = bare.pretrained_cfg
    source = f"timm:{name}"
    if weights and (weights.lower().endswith(WEIGHT_SUFFIXES) or "/" in weights):
        state, chosen = read_weights_file(weights), weights
    elif weights in (None, "imagenet", "DEFAULT"):
        check_hub_weights(config, f"--from {source}")
        try:
            state = timm.create_model(name, pretrained=True).state_dict()
        except Exception as err:  # timm raises many kinds (hub, http, file) for one cause: no weights here
            raise ConvlabError(f"--from {source}: cannot get its pretrained weights ({str(err).splitlines()[0][:120]})"
                               f"; offline, pass --weights PATH ({_FILE_KINDS})") from None
        chosen = config.get("hf_hub_id") or config.get("url") or "timm default"
    else:
        raise ConvlabError(f"--weights {weights}: for {source} use imagenet, DEFAULT or a {_FILE_KINDS} file")
    return Pretrained(source, f"timm:{name}", chosen, state, channels=int(config["input_size"][0]),
                      image_size=int(config["input_size"][-1]), mean=list(config["mean"]), std=list(config["std"]))
