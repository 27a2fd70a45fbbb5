"""Box-aware augmentation (torchvision's v2 transforms): the image and its boxes move together."""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

# --augment's levels for detection: light flips; standard also jitters the scale and the colours.
LEVELS = {
    "light": lambda: [v2.RandomHorizontalFlip(0.5)],
    "standard": lambda: [v2.RandomHorizontalFlip(0.5), v2.RandomPhotometricDistort(p=0.5),
                         v2.ScaleJitter(target_size=(512, 512), scale_range=(0.75, 1.25), antialias=True)],
}


class BoxAugmentation:
    """Applies the level's transforms to one image (3, H, W) uint8 and its (K, 4) xyxy boxes and labels; boxes
    that leave the image are clipped, and those left degenerate dropped (SanitizeBoundingBoxes)."""

    def __init__(self, level: str):
        self.level = level
        self.transform = v2.Compose([*LEVELS[level](), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes()])

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # v2 draws from torch's global generator: seed it from ours, inside fork_rng, so the run's generator
        # alone fixes the draws (exact resume) and nothing else's random state moves.
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        sample = {"image": tv_tensors.Image(image),
                  "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=tuple(image.shape[-2:])),
                  "labels": labels}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = self.transform(sample)
        return out["image"].as_subclass(torch.Tensor), out["boxes"].as_subclass(torch.Tensor), out["labels"]


def build_detection_augmentation(level: str) -> BoxAugmentation | None:
    """--augment none|light|standard -> the augmentation (None: none)."""
    return None if level == "none" else BoxAugmentation(level)
