"""Mask R-CNNs by name: torchvision's, built for the data's classes, a `tiny-maskrcnn` preset for tests and a first
run, and a Mask R-CNN on a classification backbone (detection/backbones.py).

Each is a detection `Detector` (0-based labels in and out; in eval mode every found object also has "masks",
(N, 1, H, W) probabilities on the input image), built by detection's `build_entry` from this module's table.
"""
from __future__ import annotations

import difflib
from functools import partial

from torch import nn

from ...detection.backbones import backbone_detector
from ...detection.models import Detector, DetectorEntry, TinyBackbone, build_entry, set_image_size
from ...errors import ConvlabError

MASK_MODELS: dict[str, DetectorEntry] = {}


def register_mask_model(name: str, description: str, weights_classes: int | None = 91):
    """Decorator: register a Mask R-CNN builder (classes incl. background, image size or None) under `name`."""

    def wrap(builder):
        MASK_MODELS[name] = DetectorEntry(name, builder, description, True, weights_classes)
        return builder

    return wrap


def find_mask_model(name: str) -> DetectorEntry:
    if name in MASK_MODELS:
        return MASK_MODELS[name]
    close = difflib.get_close_matches(name, list(MASK_MODELS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConvlabError(f"unknown instance segmentation model '{name}' for --model.{hint} Known: "
                       f"{', '.join(MASK_MODELS)}")


def build_mask_model(name: str, num_classes: int, image_size: int | None, weights: str | None = None,
                     backbone: str | None = None, backbone_weights: str | None = None) -> Detector:
    """A Mask R-CNN for `num_classes` classes (0-based), as detection's build_detector builds a detector:
    `weights` a state dict file of the same architecture (COCO's 91 classes; class layers rebuilt after),
    `backbone` torchvision:NAME (with backbone_weights) or a classification run folder (`name` then ignored)."""
    if num_classes < 1:
        raise ConvlabError(f"an instance segmentation model needs at least one class, got {num_classes}")
    if backbone is not None:
        model, spec = backbone_detector(backbone, backbone_weights, num_classes + 1, image_size, masks=True)
        return Detector(model, num_classes, backbone_spec=spec)
    return build_entry(find_mask_model(name), num_classes, image_size, weights)


def _torchvision(name: str, classes: int, image_size: int | None) -> nn.Module:
    import torchvision  # lazy: start-up time

    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=classes)
    return set_image_size(model, image_size)


for _name, _text in (("maskrcnn_resnet50_fpn", "Mask R-CNN, ResNet-50 FPN (44M); CPU: 320 px at most; else a GPU"),
                     ("maskrcnn_resnet50_fpn_v2", "Mask R-CNN v2, ResNet-50 FPN (46M); a GPU")):
    register_mask_model(_name, _text)(partial(_torchvision, _name))


@register_mask_model("tiny-maskrcnn", "Mask R-CNN on four conv layers (0.3M); CPU: 64-128 px", weights_classes=None)
def tiny_maskrcnn(classes: int, image_size: int | None) -> nn.Module:
    """Objects of 8-32 px on images of 64-128 px: tiny-detector's backbone (one level, stride 4), anchors of
    8-32 px, and small box and mask heads (128-wide box MLP, two 32-channel mask convs)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    backbone = TinyBackbone()
    width, size = backbone.out_channels, image_size or 64
    return MaskRCNN(backbone, None, min_size=size, max_size=size,
                    rpn_anchor_generator=AnchorGenerator(((8, 16, 32),), ((0.5, 1.0, 2.0),)),
                    rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                    rpn_post_nms_top_n_test=100, box_batch_size_per_image=32, box_detections_per_img=20,
                    box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=1),
                    box_head=TwoMLPHead(width * 7 * 7, 128), box_predictor=FastRCNNPredictor(128, classes),
                    mask_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=1),
                    mask_head=MaskRCNNHeads(width, [32, 32], 1), mask_predictor=MaskRCNNPredictor(32, 32, classes))
