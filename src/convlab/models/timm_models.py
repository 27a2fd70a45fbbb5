"""timm models by name (timm:NAME), when the optional timm package is installed (the timm extra)."""
from __future__ import annotations

import inspect
import logging

from torch import nn

from ..errors import ConvlabError
from .registry import ModelEntry, ModelFamily, register_family
from .weights import WEIGHT_SUFFIXES

PREFIX = "timm:"


def require_timm(what: str):
    try:
        import timm
    except ImportError:
        raise ConvlabError(f"{what} needs the timm package: pip install -e '.[timm]' in the convlab "
                           f"folder") from None
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


# Files timm.models._hub.load_state_dict_from_hf tries for a hub id without hf_hub_filename, in its order.
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def check_hub_weights(pretrained_cfg: dict, what: str) -> None:
    """Fail at once, in one line, where timm would download weights from a Hugging Face Hub that cannot answer.

    Offline, hf_hub_download retries each failed request 5 times (waiting 1+2+4+8+8 s, a warning line each)
    for every file timm asks for, model.safetensors then pytorch_model.bin: ~22 lines and ~50 s before the
    error. It starts with one request that it does not retry; that request is made here, with logging
    quiet, unless the weights are already in the local cache (then timm takes them from there, offline too).
    A Hub that answers at all (even 404: timm then tries its next file) is left to timm.
    """
    if pretrained_cfg.get("file") or pretrained_cfg.get("state_dict") or not pretrained_cfg.get("hf_hub_id"):
        return  # not from the Hub: a URL through torch.hub, which fails at once by itself
    try:
        import huggingface_hub
        from huggingface_hub import constants
        from huggingface_hub.utils import HfHubHTTPError
    except ImportError:
        return  # timm then uses the URL
    repo, _, revision = pretrained_cfg["hf_hub_id"].partition("@")
    revision = revision or None
    files = (pretrained_cfg["hf_hub_filename"],) if pretrained_cfg.get("hf_hub_filename") else _HUB_FILES
    if any(isinstance(huggingface_hub.try_to_load_from_cache(repo, name, revision=revision), str) for name in files):
        return
    endpoint = constants.ENDPOINT
    advice = f"; offline, download them elsewhere and pass --weights PATH ({'/'.join(WEIGHT_SUFFIXES)})"
    if constants.HF_HUB_OFFLINE:
        raise ConvlabError(f"{what}: cannot get its pretrained weights (HF_HUB_OFFLINE is set and {repo} is not in "
                           f"the Hugging Face cache {constants.HF_HUB_CACHE}){advice}")
    url = huggingface_hub.hf_hub_url(repo, files[0], revision=revision)
    kwargs = {"timeout": getattr(constants, "HF_HUB_ETAG_TIMEOUT", 10)}
    if "retry_on_errors" in inspect.signature(huggingface_hub.get_hf_file_metadata).parameters:
        kwargs["retry_on_errors"] = False
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        huggingface_hub.get_hf_file_metadata(url, **kwargs)
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status is not None and (status == 429 or status >= 500):
            raise ConvlabError(f"{what}: cannot get its pretrained weights (HTTP {status} from the Hugging Face Hub "
                               f"at {endpoint}; try again later){advice}") from None
    except Exception as err:  # noqa: BLE001  the HTTP client's connection, timeout and proxy errors, by any name
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise ConvlabError(f"{what}: cannot get its pretrained weights (the Hugging Face Hub at {endpoint} does not "
                           f"answer: {reason}){advice}") from None
    finally:
        hub_logger.setLevel(level)


def _resolve(name: str) -> ModelEntry | None:
    if name.startswith(PREFIX):
        return ModelEntry(name, builder_for(name[len(PREFIX):]), "timm model", "timm")
    return None


register_family(ModelFamily("timm", _resolve, lambda: []))  # thousands of names: listed by timm itself
