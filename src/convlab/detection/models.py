"""Detectors by name: torchvision's, built for the data's classes, and the small `tiny-detector` preset.

Every detector is a `Detector`: convlab's 0-based labels in and out, whatever background slot the torchvision
model inside keeps. Its state dict is the torchvision model's under `model.` (model.backbone..., model.rpn...,
model.roi_heads...), so a torchvision state dict loads into `detector.model` as it is.

Nothing is downloaded here: detectors start from random weights, a user's COCO weights file (`weights=FILE`,
a state dict of the same torchvision architecture with its 91 COCO classes, loaded before the class layers are
rebuilt), or a classification backbone (`backbone=`, detection/backbones.py).
"""
from __future__ import annotations

import difflib
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ConvlabError
from ..models.freeze import HEAD
from ..models.weights import WEIGHT_SUFFIXES, load_state_dict_file
from .backbones import backbone_detector
from .checked import load_checked

COCO_CLASSES = 91  # torchvision's COCO weights: 90 category ids and the background slot 0


class Detector(nn.Module):
    """A torchvision detector that speaks 0-based labels.

    Train mode: model(images, targets) -> dict of losses; eval mode: model(images) -> [{"boxes", "labels",
    "scores"}] per image. images: list of (3, H, W) float tensors in [0, 1]; targets: [{"boxes": (K, 4) float32
    xyxy pixels, "labels": (K,) int64 0-based}]. Faster R-CNN and SSD keep class 0 for the background, so their
    labels are shifted by one inside; RetinaNet and FCOS score each class on its own and need no shift.
    """

    def __init__(self, model: nn.Module, num_classes: int, backbone_spec: str | None = None):
        super().__init__()
        self.model = model
        self.num_classes = num_classes
        self.backbone_spec = backbone_spec  # a classification backbone's architecture (detection/backbones.py)
        self.shift = 1 if kind_of(model).background else 0

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if targets is not None:
            targets = [{**t, "labels": t["labels"] + self.shift} for t in targets]
        out = self.model(images, targets)
        if self.model.training:
            return out
        return [{**o, "labels": o["labels"] - self.shift} for o in out]

    def reset_classes(self, num_classes: int) -> None:
        """Rebuild the layers whose size depends on the classes (fresh weights); everything else is kept."""
        kind_of(self.model).reset(self.model, num_classes + self.shift)
        self.num_classes = num_classes

    def group_modules(self) -> list[tuple[str, list[str]]]:
        """Parameter groups for fine-tuning (models.freeze), bottom first. The backbone is the feature extractor a
        classifier would have (its first blocks, up to a ResNet's layer1, the stem; each later block a stage);
        `head` is everything after it, which torchvision always trains: FPN or extra layers, RPN, box heads."""
        backbone = self.model.backbone
        body_name = next(name for name in ("body", "features") if hasattr(backbone, name))
        blocks = [f"model.backbone.{body_name}.{name}" for name, child in getattr(backbone, body_name).named_children()
                  if _has_params(child)]
        first = next((i for i, name in enumerate(blocks) if name.rsplit(".", 1)[1].startswith("layer")), 1)
        stages = [(f"stage{i}", [block]) for i, block in enumerate(blocks[first:], start=1)]
        heads = [f"model.backbone.{name}" for name, child in backbone.named_children()
                 if name != body_name and _has_params(child)]
        heads += [f"model.{name}" for name, child in self.model.named_children()
                  if name != "backbone" and _has_params(child)]
        return [("stem", blocks[:first])] + stages + [(HEAD, heads)]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


# --- the kinds of torchvision detector: background slot and how their class layers are rebuilt -----------

@dataclass(frozen=True)
class Kind:
    background: bool  # class 0 is the background: convlab's labels are shifted by one inside
    reset: Callable[[nn.Module, int], None]  # (torchvision model, classes incl. any background) -> None


def _reset_rcnn(model: nn.Module, classes: int) -> None:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    old = model.roi_heads.box_predictor
    model.roi_heads.box_predictor = FastRCNNPredictor(old.cls_score.in_features, classes)


def _reset_mask_rcnn(model: nn.Module, classes: int) -> None:
    """Mask R-CNN: the box predictor, and the mask predictor's last conv (one mask per class)."""
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    _reset_rcnn(model, classes)
    old = model.roi_heads.mask_predictor
    model.roi_heads.mask_predictor = MaskRCNNPredictor(old.conv5_mask.in_channels, old.conv5_mask.out_channels,
                                                       classes)


def _new_logits(old: nn.Conv2d, anchors: int, classes: int, std: float, prior: float | None) -> nn.Conv2d:
    conv = nn.Conv2d(old.in_channels, anchors * classes, old.kernel_size, old.stride, old.padding)
    nn.init.normal_(conv.weight, std=std)
    nn.init.constant_(conv.bias, 0.0 if prior is None else -math.log((1 - prior) / prior))
    return conv


def _reset_dense(model: nn.Module, classes: int) -> None:
    """RetinaNet and FCOS: one cls_logits conv, initialised as torchvision does (focal-loss prior 0.01)."""
    head = model.head.classification_head
    anchors = head.cls_logits.out_channels // head.num_classes
    head.cls_logits = _new_logits(head.cls_logits, anchors, classes, 0.01, 0.01)
    head.num_classes = classes


def _reset_ssd(model: nn.Module, classes: int) -> None:
    """SSD(lite): the last conv of each level's classification block."""
    head = model.head.classification_head
    for i, block in enumerate(head.module_list):
        last = block[-1] if isinstance(block, nn.Sequential) else block  # SSDlite's blocks end in the conv
        new = _new_logits(last, last.out_channels // head.num_columns, classes, 0.03, None)
        if isinstance(block, nn.Sequential):
            block[-1] = new
        else:
            head.module_list[i] = new
    head.num_columns = classes


def kind_of(model: nn.Module) -> Kind:
    from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
    from torchvision.models.detection.ssd import SSD

    kinds = {MaskRCNN: Kind(True, _reset_mask_rcnn),  # before FasterRCNN, its base class
             FasterRCNN: Kind(True, _reset_rcnn), SSD: Kind(True, _reset_ssd),
             RetinaNet: Kind(False, _reset_dense), FCOS: Kind(False, _reset_dense)}
    for cls, kind in kinds.items():
        if isinstance(model, cls):
            return kind
    raise ConvlabError(f"{type(model).__name__} is not a detector convlab knows (Faster R-CNN, Mask R-CNN, SSD, "
                       f"RetinaNet, FCOS)")


# --- the registry -------------------------------------------------------------------------------------------

# A builder gets (classes incl. any background, image size or None) and returns the torchvision model.
DetectorBuilder = Callable[[int, "int | None"], nn.Module]


@dataclass(frozen=True)
class DetectorEntry:
    name: str
    builder: DetectorBuilder
    description: str
    background: bool  # the model keeps class 0 for the background
    weights_classes: int | None  # classes (incl. background) of the weights files it loads; None: the data's


DETECTORS: dict[str, DetectorEntry] = {}


def register_detector(name: str, description: str, background: bool, weights_classes: int | None = COCO_CLASSES):
    """Decorator: register a detector builder under `name`."""

    def wrap(builder: DetectorBuilder) -> DetectorBuilder:
        DETECTORS[name] = DetectorEntry(name, builder, description, background, weights_classes)
        return builder

    return wrap


def find_detector(name: str) -> DetectorEntry:
    if name in DETECTORS:
        return DETECTORS[name]
    close = difflib.get_close_matches(name, list(DETECTORS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConvlabError(f"unknown detector '{name}' for --model.{hint} Known detectors: {', '.join(DETECTORS)}")


def list_detectors() -> list[DetectorEntry]:
    return list(DETECTORS.values())


def build_detector(name: str, num_classes: int, image_size: int | None, weights: str | None = None,
                   backbone: str | None = None, backbone_weights: str | None = None) -> Detector:
    """A detector for `num_classes` classes (0-based), resizing images so their longer side is `image_size`
    (None: the model's own default, 800-1333 px for the R-CNNs, 320 for SSDlite).

    weights: a state dict file of the same architecture (torchvision's COCO weights saved with torch.save or
    safetensors), loaded before the class layers are rebuilt for `num_classes`. backbone: `torchvision:NAME`
    (with backbone_weights, a classifier's weights file) or a convlab classification run folder: a Faster
    R-CNN on that network's features (detection/backbones.py); `name` is then ignored.
    """
    if num_classes < 1:
        raise ConvlabError(f"a detector needs at least one class, got {num_classes}")
    if backbone is not None:
        model, spec = backbone_detector(backbone, backbone_weights, num_classes + 1, image_size)
        return Detector(model, num_classes, backbone_spec=spec)
    return build_entry(find_detector(name), num_classes, image_size, weights)


def build_entry(entry: DetectorEntry, num_classes: int, image_size: int | None, weights: str | None = None) -> Detector:
    """The detector `entry` builds, for `num_classes` classes, from random weights or a `weights` file (loaded
    before the class layers are rebuilt; see build_detector)."""
    name = entry.name
    shift = 1 if entry.background else 0
    if weights is None:
        return Detector(entry.builder(num_classes + shift, image_size), num_classes)
    saved_classes = entry.weights_classes or num_classes + shift  # what the file's class layers hold
    detector = Detector(entry.builder(saved_classes, image_size), saved_classes - shift)
    load_checked(detector.model, read_detector_weights(weights), f"--weights {weights}", name)
    if detector.num_classes != num_classes:
        detector.reset_classes(num_classes)
    return detector


def read_detector_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file; a convlab detector's own (keys under `model.`) is taken as well."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConvlabError(f"--weights {path}: no such file; give a {'/'.join(WEIGHT_SUFFIXES)} state dict file")
    state = load_state_dict_file(path)
    for prefix in ("module.", "model."):  # DataParallel's prefix, a convlab Detector's
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def set_image_size(model: nn.Module, image_size: int | None) -> nn.Module:
    """Resize inside the detector so an image's longer side is `image_size` (fixed square for SSD)."""
    if image_size is None:
        return model
    transform = model.transform
    transform.min_size, transform.max_size = (image_size,), image_size
    if transform.fixed_size is not None:
        transform.fixed_size = (image_size, image_size)
    return model


# --- torchvision's detectors ----------------------------------------------------------------------------------

def _torchvision(name: str, classes: int, image_size: int | None, **kwargs) -> nn.Module:
    import torchvision  # lazy: start-up time

    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=classes, **kwargs)
    return set_image_size(model, image_size)


def _register_torchvision(name: str, description: str, background: bool, **kwargs) -> None:
    register_detector(name, description, background)(partial(_torchvision, name, **kwargs))


# Descriptions give the parameters and the CPU cost: CPU seconds of one core per training image (a step on two
# 320x240 images, backward included), what `convlab models` shows a user choosing one.
_register_torchvision("ssdlite320_mobilenet_v3_large",
                      "SSDlite, MobileNetV3-Large (2.2M); CPU: 320 px, 0.2 s per training image (batch >= 2)", True)
_register_torchvision("fasterrcnn_mobilenet_v3_large_320_fpn",
                      "Faster R-CNN, MobileNetV3-Large FPN, 150 proposals (19M); CPU: 320 px, 1.6 s per image", True)
_register_torchvision("fasterrcnn_mobilenet_v3_large_fpn",
                      "Faster R-CNN, MobileNetV3-Large FPN (19M); CPU: 320 px, 1.6 s per image; 800 px: a GPU", True)
_register_torchvision("fasterrcnn_resnet50_fpn",
                      "Faster R-CNN, ResNet-50 FPN (41M); CPU: 320 px at most, 2.8 s per image; else a GPU", True)
_register_torchvision("fasterrcnn_resnet50_fpn_v2",
                      "Faster R-CNN v2, ResNet-50 FPN (43M); a GPU (CPU at 320 px: 9 s per image)", True)
_register_torchvision("retinanet_resnet50_fpn",
                      "RetinaNet, ResNet-50 FPN (32M); CPU: 320 px at most, 1.7 s per image; else a GPU", False)
_register_torchvision("retinanet_resnet50_fpn_v2",
                      "RetinaNet v2, ResNet-50 FPN, GroupNorm heads (36M); CPU: 320 px at most, 1.8 s per image; "
                      "else a GPU", False)
_register_torchvision("fcos_resnet50_fpn",
                      "FCOS, ResNet-50 FPN (32M); CPU: 320 px at most, 1.6 s per image; else a GPU", False)


# --- tiny-detector: a few convolutions and an FCOS head, for tests and a learner's first run ----------------------

class TinyBackbone(nn.Module):
    """Four 3x3 conv-BN-ReLU blocks, stride 4 overall: (N, 3, H, W) -> {"0": (N, width, H/4, W/4)}."""

    def __init__(self, width: int = 32):
        super().__init__()
        channels = [3, width // 4, width // 2, width, width]
        strides = [2, 1, 2, 1]
        self.body = nn.Sequential(OrderedDict(
            (f"conv{i + 1}", nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                                           nn.ReLU(inplace=True)))
            for i, (c_in, c_out, stride) in enumerate(zip(channels, channels[1:], strides))))
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return OrderedDict([("0", self.body(x))])


@register_detector("tiny-detector", "FCOS on four conv layers (0.1M); CPU: 64-128 px, 150 training images a second "
                                    "at 64 px", background=False, weights_classes=None)
def tiny_detector(classes: int, image_size: int | None) -> nn.Module:
    """Objects of 8-32 px on images of 64-128 px: one feature level at stride 4, FCOS's anchor-free head with
    two convs per branch. On generated shapes (make_shapes, 64 px) 256 images x 8 epochs, Adam at 1e-3, batch 8,
    reach AP50 0.91-0.95 in about 13 s of one CPU core."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    backbone = TinyBackbone()
    size = image_size or 64
    return FCOS(backbone, classes, min_size=size, max_size=size,
                anchor_generator=AnchorGenerator(((8,),), ((1.0,),)),
                head=FCOSHead(backbone.out_channels, 1, classes, num_convs=2),
                score_thresh=0.05, detections_per_img=100)
