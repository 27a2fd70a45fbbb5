"""Test-time augmentation: the views of each image whose class probabilities a classifier averages.

A view is an image the model reads at its input size; `Run.predict_outputs` runs every view and averages the
softmax probabilities (not the logits: a confident view must not outvote the others by its scale).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from ..errors import ConvlabError

CROP_FRACTION = 0.875  # five-crop: the crops' side over the enlarged image's (timm's crop_pct; ImageNet's 224/256)


@dataclass(frozen=True)
class TestTimeAugmentation:
    """One entry of TTA: how images are read (`source_size`) and which views of them the model runs."""

    __test__ = False  # a pytest collecting a test module that imports this must not take it for a test class

    name: str
    what: str  # one line for the docs and the messages
    views: Callable[[torch.Tensor, tuple[int, int]], list[torch.Tensor]]  # (N, C, h, w) -> [(N, C, H, W), ...]
    source_size: Callable[[tuple[int, int]], tuple[int, int]]  # the model's (H, W) -> the (h, w) images are read at


def _same_size(size: tuple[int, int]) -> tuple[int, int]:
    return tuple(size)


def five_crop_size(size: tuple[int, int]) -> tuple[int, int]:
    """The model's (H, W) -> the size the whole image is resized to before five-crop: each side / 0.875 (floor,
    as timm; 224 -> 256), at least one pixel more so the crops differ."""
    return tuple(max(side + 1, math.floor(side / CROP_FRACTION)) for side in size)


def _none(images: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    return [images]


def _flip(images: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    """The image and its left-right mirror."""
    return [images, F.horizontal_flip(images)]


def _five_crop(images: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    """torchvision's five crops (four corners, centre) of the model's size, from the image at five_crop_size;
    an image at another size (a test split already at the input size) is resized to it first, bilinear with
    antialiasing as the run's preprocessing resizes."""
    source = five_crop_size(size)
    if tuple(images.shape[-2:]) != source:
        images = F.resize(images, list(source), antialias=True)
    return list(F.five_crop(images, list(size)))


TTA = {
    "none": TestTimeAugmentation("none", "the image as it is (one pass)", _none, _same_size),
    "flip": TestTimeAugmentation("flip", "the image and its left-right mirror (two passes)", _flip, _same_size),
    "five-crop": TestTimeAugmentation("five-crop", f"the image resized to the input size / {CROP_FRACTION}, its "
                                                   f"four corner crops and centre crop (five passes)",
                                      _five_crop, five_crop_size),
}


def tta_named(name: str) -> TestTimeAugmentation:
    """TTA's entry for `name`; a name it lacks is a one-line error naming --tta."""
    if name not in TTA:
        raise ConvlabError(f"--tta must be one of {', '.join(TTA)}, got {name!r}")
    return TTA[name]


def tta_views(images: np.ndarray, size: tuple[int, int] | list[int], name: str) -> list[np.ndarray]:
    """(N, C, h, w) uint8 images or float32 inputs -> the views, each (N, C, H, W) of the same dtype; `none`
    gives `images` itself (nothing copied, the plain path unchanged)."""
    tta = tta_named(name)
    if tta.name == "none":
        return [images]
    tensor = torch.from_numpy(np.require(images, requirements="CW"))  # copies a read-only memmap (a streamed split)
    return [np.ascontiguousarray(view.numpy()) for view in tta.views(tensor, tuple(size))]


def averaged(outputs: list[np.ndarray]) -> np.ndarray:
    """The mean of the views' outputs (N, classes), in their dtype; one view is returned as it is."""
    if len(outputs) == 1:
        return outputs[0]
    return np.mean(np.stack(outputs), axis=0, dtype=np.float64).astype(outputs[0].dtype)
