"""Mask-aware augmentation (--augment none/light/standard) with torchvision's v2 transforms, drawn from a generator.

v2 transforms move a `tv_tensors.Mask` with its image: flips and crops alike, resized nearest-neighbour (a class
index is never blended) and padded with IGNORE, so padding is left out of the loss. They draw from torch's global
RNG; each image's draws are seeded from the loader's generator instead, so a seed fixes them and a resumed run
replays them (as detection/transforms.py does).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from ..errors import ConvlabError
from .targets import IGNORE

LEVELS = ("none", "light", "standard")
SCALES = (0.5, 2.0)  # standard: the shorter side resized to 0.5x-2x, then cropped back (torchvision's reference)


@dataclass(frozen=True)
class SegmentationAugmentation:
    """One image's augmentation: (image float (C, H, W) in [0, 1], mask (H, W) uint8, generator) -> the same,
    of the same size, the mask moved with the image."""

    level: str

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        seed = int(torch.randint(2 ** 62, (1,), generator=generator))
        steps = _pipeline(self.level, image.shape[0], *image.shape[-2:])
        with torch.random.fork_rng(devices=[]):  # the global RNG is put back: nothing else sees these draws
            torch.manual_seed(seed)
            image, mask = steps(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


@cache
def _pipeline(level: str, channels: int, height: int, width: int):
    """light: a horizontal flip half the time; standard: that, a random scale (0.5x-2x) cropped back to the
    image's size (the mask padded with IGNORE where the image shrank) and, on RGB only, photometric changes
    (brightness, contrast, saturation, hue): a gray scan's values are its measurement."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    steps = [v2.RandomHorizontalFlip(0.5)]
    if level == "standard":
        low = max(1, round(min(height, width) * SCALES[0]))
        steps += [_random_scale()(low, max(low + 1, round(min(height, width) * SCALES[1]))),
                  v2.RandomCrop((height, width), pad_if_needed=True, fill={tv_tensors.Mask: IGNORE, "others": 0})]
        if channels == 3:
            steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02))
    return v2.Compose(steps)


@cache
def _random_scale():
    """v2.RandomResize with masks resized nearest-exact (pixel centres, where the bilinear image samples): v2 resizes
    a mask with torch's plain nearest, which shifts its edges up to a pixel against the image's when shrinking."""
    from torchvision import tv_tensors
    from torchvision.transforms import InterpolationMode, v2
    from torchvision.transforms.v2 import functional

    class RandomScale(v2.RandomResize):
        def transform(self, inpt, params):
            if isinstance(inpt, tv_tensors.Mask):
                return functional.resize(inpt, params["size"], interpolation=InterpolationMode.NEAREST_EXACT)
            return super().transform(inpt, params)

    return RandomScale


def build_segmentation_augmentation(level: str) -> SegmentationAugmentation | None:
    """--augment LEVEL -> the augmentation, or None for `none`."""
    if level not in LEVELS:
        raise ConvlabError(f"--augment {level}: segmentation knows {', '.join(LEVELS)}")
    return None if level == "none" else SegmentationAugmentation(level)
