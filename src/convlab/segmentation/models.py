"""Segmenters by name: torchvision's semantic segmentation models built for the data's classes and channels, the
`unet` preset (on its own conv stack or on a classifier's features: `backbone=`) and the small `tiny-unet`.

Every segmenter is a `Segmenter`: normalized (N, C, H, W) images in, class logits at the input's size out. Its
state dict is the model's under `model.` (model.backbone..., model.classifier... for torchvision's), so a
torchvision state dict loads into `segmenter.model` as it is.

Nothing is downloaded here: segmenters start from random weights, a weights file (`weights=FILE`: a state dict of
the same architecture, e.g. torchvision's COCO-VOC weights saved with torch.save, or a convlab segmenter's; its
class layers are rebuilt when the classes differ, its first conv when the channels do) or, for `unet`, a
classifier's feature layers (`backbone=`). Grayscale data (channels=1) gets the first conv rebuilt, its filters
the mean of the RGB ones, rather than the gray channel repeated three times: a third of that conv's work.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from ..detection.backbones import IMAGENET_MEAN, IMAGENET_STD
from ..detection.checked import load_checked
from ..detection.models import read_detector_weights
from ..errors import ConvlabError
from ..models.freeze import HEAD
from ..models.torchvision_models import adapt_first_conv
from .unet import UNet, backbone_unet, channel_norm, plain_encoder


class Segmenter(nn.Module):
    """A segmentation model with one interface for training, prediction and export.

    forward(x: (N, C, H, W) float, already normalized): in train mode {"out": logits (N, K, H, W), "aux": the
    auxiliary head's logits of the same shape, or None}; in eval mode the logits tensor (N, K, H, W) alone, so
    ONNX export and tiled prediction see one tensor. K = num_classes, index 0 the background where the data has one.
    """

    def __init__(self, model: nn.Module, num_classes: int, channels: int, backbone_spec: str | None = None,
                 norm: tuple[list[float], list[float]] | None = None):
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.channels = channels
        self.backbone_spec = backbone_spec  # a classification backbone's architecture (detection/backbones.py)
        self.norm = norm  # (mean, std) its pretrained weights expect, per channel; None: measure on the data

    def forward(self, x: torch.Tensor):
        out = self.model(x)
        logits, aux = (out["out"], out.get("aux")) if isinstance(out, dict) else (out, None)
        return {"out": logits, "aux": aux} if self.training else logits

    def reset_classes(self, num_classes: int) -> None:
        """Rebuild the layers that score the classes (fresh weights: a 1x1 conv's default init); keep the rest."""
        for name in class_layers(self.model):
            old = self.model.get_submodule(name)
            self.model.set_submodule(name, nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride,
                                                     old.padding, bias=old.bias is not None))
        self.num_classes = num_classes

    def reset_channels(self, channels: int) -> None:
        """Rebuild the first conv for `channels` input channels (the mean of its filters, models/
        torchvision_models.adapt_first_conv)."""
        adapt_first_conv(self.model, channels)
        self.channels = channels

    def group_modules(self) -> list[tuple[str, list[str]]]:
        """Parameter groups for fine-tuning (models.freeze), bottom first: the encoder's first blocks (up to a
        ResNet's layer1) are the stem, each later block a stage; `head` is everything after the encoder (decoder,
        classifier, auxiliary classifier)."""
        backbone = self.model.backbone
        blocks = [f"model.backbone.{name}" for name, child in backbone.named_children() if _has_params(child)]
        first = next((i for i, name in enumerate(blocks) if name.rsplit(".", 1)[1].startswith("layer")), 1)
        stages = [(f"stage{i}", [block]) for i, block in enumerate(blocks[first:], start=1)]
        heads = [f"model.{name}" for name, child in self.model.named_children()
                 if name != "backbone" and _has_params(child)]
        return [("stem", blocks[:first])] + stages + [(HEAD, heads)]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def class_layers(model: nn.Module) -> list[str]:
    """The module names of the convs that score the classes (main head first, then any auxiliary one)."""
    from torchvision.models.segmentation import FCN, LRASPP, DeepLabV3  # lazy: start-up time

    kinds = {DeepLabV3: ["classifier.4", "aux_classifier.4"], FCN: ["classifier.4", "aux_classifier.4"],
             LRASPP: ["classifier.low_classifier", "classifier.high_classifier"], UNet: ["head"]}
    names = next(names for cls, names in kinds.items() if isinstance(model, cls))
    present = dict(model.named_modules())
    return [name for name in names if name in present]


def first_conv(model: nn.Module) -> str:
    """The module name of the conv that reads the image (the one reset_channels rebuilds)."""
    return next(name for name, module in model.named_modules() if isinstance(module, nn.Conv2d))


# --- the registry -------------------------------------------------------------------------------------------

# A builder gets (classes, input channels) and returns the model; `unet` also takes a backbone (build_segmenter).
SegmenterBuilder = Callable[[int, int], nn.Module]


@dataclass(frozen=True)
class SegmenterEntry:
    name: str
    builder: SegmenterBuilder
    description: str
    cpu: str  # what it costs on a CPU, for a user choosing one (`convlab models`)
    takes_backbone: bool = False  # `backbone=` builds it on a classifier's feature layers
    weights_norm: tuple | None = None  # (mean, std) of the weights files it loads (torchvision's: ImageNet)


SEGMENTERS: dict[str, SegmenterEntry] = {}


def register_segmenter(name: str, description: str, cpu: str, takes_backbone: bool = False,
                       weights_norm: tuple | None = None):
    """Decorator: register a segmenter builder under `name`."""

    def wrap(builder: SegmenterBuilder) -> SegmenterBuilder:
        SEGMENTERS[name] = SegmenterEntry(name, builder, description, cpu, takes_backbone, weights_norm)
        return builder

    return wrap


def find_segmenter(name: str) -> SegmenterEntry:
    if name in SEGMENTERS:
        return SEGMENTERS[name]
    close = difflib.get_close_matches(name, list(SEGMENTERS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConvlabError(f"unknown segmenter '{name}' for --model.{hint} Known segmenters: {', '.join(SEGMENTERS)}")


def list_segmenters() -> list[SegmenterEntry]:
    return list(SEGMENTERS.values())


def build_segmenter(name: str, classes: int, channels: int = 3, weights: str | None = None,
                    backbone: str | None = None, backbone_weights: str | None = None) -> Segmenter:
    """A segmenter scoring `classes` classes (the background included) on `channels`-channel images.

    weights: a state dict file of the same architecture (torchvision's, or a convlab segmenter's), loaded
    before the class layers and the first conv are rebuilt for `classes` and `channels` where they differ.
    backbone (with `unet`): `torchvision:NAME` (with backbone_weights, the classifier's weights file) or a convlab
    classification run folder, the U-Net's encoder (segmentation/unet.py)."""
    entry = find_segmenter(name)
    if classes < 2:
        raise ConvlabError(f"a segmenter scores at least two classes (the background and one more), got {classes}")
    if backbone is not None and not entry.takes_backbone:
        raise ConvlabError(f"--backbone {backbone}: --model {name} has its own encoder; --model unet builds a U-Net "
                           f"on a classifier's features")
    if backbone is not None:
        model, spec, norm = backbone_unet(backbone, backbone_weights, classes, channels)
        segmenter = Segmenter(model, classes, channels, backbone_spec=spec, norm=norm)
    else:
        segmenter = Segmenter(entry.builder(classes, channels), classes, channels)
    if weights is not None:
        load_weights(segmenter, weights, name)
        if entry.weights_norm is not None:
            segmenter.norm = channel_norm(*entry.weights_norm, channels)
    return segmenter


def load_weights(segmenter: Segmenter, path: str, name: str) -> None:
    """Load a weights file into `segmenter`, its class layers and first conv first sized as the file's, then
    rebuilt for the segmenter's classes and channels where those differ (torchvision's 21 VOC classes, RGB)."""
    state = read_detector_weights(path)  # any model's state dict file; a convlab model's `model.` prefix dropped
    classes, channels = segmenter.num_classes, segmenter.channels
    saved_classes = _shape(state, f"{class_layers(segmenter.model)[0]}.weight", 0, classes)
    saved_channels = _shape(state, f"{first_conv(segmenter.model)}.weight", 1, channels)
    if saved_classes != classes:
        segmenter.reset_classes(saved_classes)
    if saved_channels != channels:
        segmenter.reset_channels(saved_channels)
    load_checked(segmenter.model, state, f"--weights {path}", name)
    if saved_classes != classes:
        segmenter.reset_classes(classes)
    if saved_channels != channels:
        segmenter.reset_channels(channels)


def _shape(state: dict[str, torch.Tensor], key: str, dim: int, default: int) -> int:
    """A weight's size along `dim` in the file, or `default` when the file has no such key (load_checked then
    names what is missing)."""
    tensor = state.get(key)
    return int(tensor.shape[dim]) if tensor is not None and tensor.dim() > dim else default


# --- torchvision's segmentation models ------------------------------------------------------------------------

def _torchvision(name: str, classes: int, channels: int, **kwargs) -> nn.Module:
    import torchvision  # lazy: start-up time

    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=classes, **kwargs)
    if channels != 3:
        adapt_first_conv(model, channels)
    return model


def _register_torchvision(name: str, description: str, cpu: str, **kwargs) -> None:
    register_segmenter(name, description, cpu, weights_norm=(IMAGENET_MEAN, IMAGENET_STD))(
        partial(_torchvision, name, **kwargs))


# The CPU notes: seconds of one core per 256x256 image, training (a step on two images, backward included) and
# predicting, what `convlab models` shows a user choosing one.
_register_torchvision("lraspp_mobilenet_v3_large", "LR-ASPP, MobileNetV3-Large (3.2M)",
                      "CPU at 256 px: 0.19 s per training image, 0.03 s to predict")
_register_torchvision("deeplabv3_mobilenet_v3_large", "DeepLabV3, MobileNetV3-Large, aux head (11M)",
                      "CPU at 256 px: 0.38 s per training image, 0.09 s to predict", aux_loss=True)
_register_torchvision("deeplabv3_resnet50", "DeepLabV3, ResNet-50 (dilated), aux head (42M)",
                      "a GPU (CPU at 256 px: 3.9 s per training image, 1.2 s to predict)", aux_loss=True)
_register_torchvision("fcn_resnet50", "FCN, ResNet-50 (dilated), aux head (35M)",
                      "a GPU (CPU at 256 px: 3.3 s per training image, 1.1 s to predict)", aux_loss=True)


# --- U-Nets -----------------------------------------------------------------------------------------------------

# Half the paper's widths (64..1024): a quarter of the multiply-adds, 7.8M parameters instead of 31M.
UNET_WIDTHS = [32, 64, 128, 256, 512]
TINY_WIDTHS = [16, 32, 64]


@register_segmenter("unet", "U-Net, 5 levels of 32-512 channels (7.8M), or on a classifier's features "
                            "(finetune --from torchvision:NAME --weights FILE, or --from RUN_DIR)",
                    "CPU at 256 px: 1.4 s per training image, 0.45 s to predict; on mobilenet_v2 0.33 s and 0.10 s",
                    takes_backbone=True)
def unet(classes: int, channels: int) -> nn.Module:
    return UNet(plain_encoder(channels, UNET_WIDTHS), channels, classes, UNET_WIDTHS)


@register_segmenter("tiny-unet", "U-Net, 3 levels of 16-64 channels (0.1M): tests and a first run",
                    "CPU at 256 px: 0.26 s per training image (64 px: 0.026 s), 0.08 s to predict")
def tiny_unet(classes: int, channels: int) -> nn.Module:
    return UNet(plain_encoder(channels, TINY_WIDTHS), channels, classes, TINY_WIDTHS)
