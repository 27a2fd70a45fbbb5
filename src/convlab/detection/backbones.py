"""Classification networks as detection backbones: the torchvision tutorial's second way, a Faster R-CNN on any
classifier's feature layers, from a torchvision classifier (with an ImageNet weights file) or a convlab run.
The same feature layers (classifier_features) are the encoder of segmentation's U-Net.

A backbone is named by a spec that rebuilds its architecture without any file, so a detection run can be loaded
anywhere: `torchvision:NAME` (a torchvision classifier) or `model:NAME@CxHxW` (a convlab model as create_model
builds it for C channels and HxW images: a run's network). A run folder given as the backbone becomes the
`model:` spec of its network, with the run's weights and normalization.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConvlabError
from ..models.pretrained import parse_source, read_weights_file
from ..models.registry import create_model
from ..models.torchvision_models import torchvision_names
from .checked import load_checked

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TUTORIAL_SIDE = 800  # torchvision's Faster R-CNN default shorter side, whose anchors the tutorial uses
ANCHOR_FRACTIONS = (0.04, 0.08, 0.16, 0.32, 0.64)  # the tutorial's 32..512 px anchors on 800 px images
NECK = 256  # channels the features are projected to before the RPN and box head (ClassifierBackbone)
# The box head costs 12.8M multiply-adds per proposal: torchvision's 512 sampled per training image and 1000 kept
# per test image made it most of a CPU step; 128 and 300 cut a training step 2.8x at 320 px.
BOX_SAMPLES, TEST_PROPOSALS = 128, 300


class ClassifierBackbone(nn.Module):
    """A classifier's feature layers under a Faster R-CNN: RGB in [0, 1] -> the input the classifier was trained
    on (its channels and normalization, kept as buffers so a detection run carries them) -> its features ->
    a 1x1 conv to NECK channels (an FPN's width) -> {"0": (N, NECK, H/s, W/s)}.

    The 1x1 conv is not the tutorial's (it feeds MobileNetV2's 1280 channels straight to the RPN and box head):
    there the box head alone costs 64M multiply-adds per box and a step of two 320 px images about 12 s of one
    CPU core; with it, the RPN and box head are 5x smaller. It is new, so it trains with the heads."""

    def __init__(self, body: nn.Sequential, channels: int, mean: list[float], std: list[float]):
        super().__init__()
        self.channels = channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.body = body
        with torch.no_grad():
            features = int(self.body.eval()(torch.zeros(1, channels, 64, 64)).shape[1])
        self.body.train()
        self.neck = nn.Conv2d(features, NECK, 1)
        self.out_channels = NECK

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels == 1:  # a grayscale network: luminance as PIL's convert("L") computes it
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return OrderedDict([("0", self.neck(self.body((x - self.mean) / self.std)))])


def feature_layers(classifier: nn.Module) -> nn.Sequential:
    """The layers of a classifier before its pooling and classifier: `features` (convlab's presets, VGG,
    MobileNets, EfficientNets, DenseNets, ConvNeXt) or a ResNet's stem and layers."""
    if isinstance(getattr(classifier, "features", None), nn.Sequential):
        return classifier.features
    if hasattr(classifier, "layer1") and hasattr(classifier, "fc"):
        children = OrderedDict()
        for name, child in classifier.named_children():
            if name in ("avgpool", "dropout", "fc"):
                break
            children[name] = child
        return nn.Sequential(children)
    raise ConvlabError(f"--backbone: cannot find the feature layers of a {type(classifier).__name__} (convlab takes "
                       f"a `features` block or a ResNet's layers); use torchvision:mobilenet_v2, resnet18, ... or a "
                       f"run of a convlab preset")


def parse_backbone(spec: str) -> tuple[nn.Module, int, list[float], list[float]]:
    """A spec -> (the classifier, built untrained; its input channels; mean; std)."""
    kind, name = parse_source(spec)
    if kind == "torchvision":
        import torchvision  # lazy: start-up time

        if name not in torchvision_names():
            raise ConvlabError(f"--backbone {spec}: torchvision has no classifier {name!r}; see `convlab models`")
        return torchvision.models.get_model(name, weights=None), 3, IMAGENET_MEAN, IMAGENET_STD
    if spec.startswith("model:") and "@" in spec:
        name, _, shape = spec[len("model:"):].rpartition("@")
        try:
            channels, height, width = (int(v) for v in shape.split("x"))
        except ValueError:
            raise ConvlabError(f"--backbone {spec}: write model:NAME@CxHxW, e.g. model:mnist-cnn@1x28x28") from None
        return create_model(name, channels, 2, (height, width)), channels, [0.5] * channels, [0.25] * channels
    raise ConvlabError(f"--backbone {spec}: no such run folder; give a convlab classification run folder, "
                       f"torchvision:NAME or model:NAME@CxHxW")


@dataclass
class ClassifierFeatures:
    """A classifier's feature layers as a backbone gets them (detection's Faster R-CNN, segmentation's U-Net)."""

    body: nn.Sequential  # the layers before its pooling and classifier, with the weights given (else untrained)
    channels: int  # the input channels they take
    mean: list[float]  # the normalization they were trained with
    std: list[float]
    spec: str  # rebuilds the architecture without any file (torchvision:NAME, model:NAME@CxHxW)


def classifier_features(source: str, weights: str | None) -> ClassifierFeatures:
    """The feature layers of the classifier `source` names: `torchvision:NAME` (with `weights`, the classifier's
    weights file, its classifier layer left out), `model:NAME@CxHxW` or a convlab classification run folder."""
    spec, state, mean, std = _resolve(source, weights)
    classifier, channels, spec_mean, spec_std = parse_backbone(spec)
    body = feature_layers(classifier)
    if state is not None:
        load_checked(body, state, f"--backbone {source}" if weights is None else f"--weights {weights}", spec)
    return ClassifierFeatures(body, channels, mean or spec_mean, std or spec_std, spec)


def backbone_detector(source: str, weights: str | None, classes: int, image_size: int | None,
                      masks: bool = False) -> tuple[nn.Module, str]:
    """A Faster R-CNN with `classes` outputs (background included) on the backbone `source` names -> (the
    torchvision model, the spec that rebuilds it); with `masks`, a Mask R-CNN (its mask head on the same
    features, RoIs pooled to 14 x 14 as torchvision's).

    The anchors and RoI pooling are the tutorial's, anchors scaled with the image size; the features pass a 1x1
    conv first (ClassifierBackbone). `weights`: the
    classifier's weights file for a torchvision:NAME backbone (its classifier layer is left out)."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    features = classifier_features(source, weights)
    backbone = ClassifierBackbone(features.body, features.channels, features.mean, features.std)
    side = image_size or TUTORIAL_SIDE
    sizes = tuple(max(2, round(side * f)) for f in ANCHOR_FRACTIONS)
    heads = {"mask_roi_pool": MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2)} if masks else {}
    model = (MaskRCNN if masks else FasterRCNN)(
        backbone, classes, min_size=side, max_size=image_size or 1333,
        rpn_anchor_generator=AnchorGenerator((sizes,), ((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_batch_size_per_image=BOX_SAMPLES, rpn_post_nms_top_n_test=TEST_PROPOSALS,
        image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0], **heads)  # the backbone normalizes
    return model, features.spec


def _resolve(source: str, weights: str | None):
    """-> (spec, the feature layers' state or None, mean, std (None: the spec's own))."""
    if Path(source).is_dir():
        return _run_backbone(source, weights)
    if weights is None:
        return source, None, None, None
    state = read_weights_file(weights)
    features = {k.removeprefix("features."): v for k, v in state.items() if _is_feature_key(k, state)}
    return source, features, None, None


def _run_backbone(folder: str, weights: str | None):
    """A classification run folder -> the `model:` spec of its network, its features' weights, mean and std."""
    from ..run import load_run  # lazy: start-up time (a run folder is read only when one is given)

    if weights is not None:
        raise ConvlabError(f"--backbone {folder}: a run folder brings its own weights; leave --weights out")
    run = load_run(folder, command="--backbone")
    if run.task != "classify":
        raise ConvlabError(f"--backbone {folder}: a {run.task} run; give a classification run folder")
    height, width = run.preprocess.size
    spec = f"model:{run.config.model.name}@{run.preprocess.channels}x{height}x{width}"
    state = {k: v.detach().clone() for k, v in feature_layers(run.model).state_dict().items()}
    return spec, state, list(run.preprocess.mean), list(run.preprocess.std)


def _is_feature_key(key: str, state: dict) -> bool:
    """A classifier's state dict key that belongs to its feature layers (`features.*`, or a ResNet's stem and
    layers: anything but fc.*)."""
    if any(k.startswith("features.") for k in state):
        return key.startswith("features.")
    return not key.startswith("fc.")
