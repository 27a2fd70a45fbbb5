"""Box-aware augmentation (--augment none/light/standard) with torchvision's v2 transforms, drawn from a generator.

v2 transforms move `tv_tensors.BoundingBoxes` with the image, clip them to it and (SanitizeBoundingBoxes) drop
the ones too small to keep, labels alongside. They draw from torch's global RNG; each image's draws are seeded
from the loader's generator instead, so a seed fixes them and a resumed run replays them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from ..errors import ConvlabError

LEVELS = ("none", "light", "standard")


@dataclass(frozen=True)
class DetectionAugmentation:
    """One image's augmentation: (image uint8 (3, H, W), boxes (K, 4) float32 xyxy, labels (K,) int64, generator)
    -> the same, boxes moved with the image (clipped, and dropped with their labels when under 1 px); `apply`
    takes the target as a dict, instance masks included."""

    level: str

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, target = self.apply(image, {"boxes": boxes, "labels": labels}, generator)
        return image, target["boxes"], target["labels"]

    def apply(self, image: torch.Tensor, target: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """The same on a target dict: "boxes" and "labels", and "masks" (K, H, W) when the objects have masks
        (moved with the image, nearest-neighbour, and dropped with their boxes)."""
        from torchvision import tv_tensors

        seed = int(torch.randint(2 ** 62, (1,), generator=generator))
        wrapped = {**target, "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY",
                                                               canvas_size=tuple(image.shape[-2:]))}
        if "masks" in target:
            wrapped["masks"] = tv_tensors.Mask(target["masks"])
        with torch.random.fork_rng(devices=[]):  # the global RNG is put back: nothing else sees these draws
            torch.manual_seed(seed)
            image, wrapped = _pipeline(self.level)(tv_tensors.Image(image), wrapped)
        plain = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in wrapped.items()}
        return image.as_subclass(torch.Tensor), plain


@cache
def _pipeline(level: str):
    """light: a horizontal flip half the time; standard: that, scale jitter (objects 0.75x-1.33x about the
    centre, the canvas kept) and photometric changes (brightness, contrast, saturation, hue)."""
    from torchvision.transforms import v2

    steps = [v2.RandomHorizontalFlip(0.5)]
    if level == "standard":
        steps += [v2.RandomAffine(degrees=0.0, scale=(0.75, 1.33)),
                  v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)]
    return v2.Compose(steps + [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)])


def build_detection_augmentation(level: str) -> DetectionAugmentation | None:
    """--augment LEVEL -> the augmentation, or None for `none`."""
    if level not in LEVELS:
        raise ConvlabError(f"--augment {level}: detection knows {', '.join(LEVELS)}")
    return None if level == "none" else DetectionAugmentation(level)
