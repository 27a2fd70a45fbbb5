"""Batch mixing (--mixup, --cutmix) with torchvision's v2 MixUp and CutMix: mixed images and soft targets.

v2 pairs each image with the one before it in the batch (the batch rolled by one; the batch is shuffled) and
draws lambda from Beta(alpha, alpha) once per batch. It draws from torch's global RNG, which runs seeded from the
loader's generator here (augment.global_rng_from), so a seed fixes the mixing and a resumed run replays it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from .augment import global_rng_from


@cache
def _transform(mixup: float, cutmix: float, classes: int):
    """MixUp, CutMix, or (both set) one of the two per batch with even odds, as timm's mixup switch."""
    from torchvision.transforms import v2  # lazy: start-up time (torchvision's transforms)

    steps = ([v2.MixUp(alpha=mixup, num_classes=classes)] if mixup > 0 else []) + \
            ([v2.CutMix(alpha=cutmix, num_classes=classes)] if cutmix > 0 else [])
    return steps[0] if len(steps) == 1 else v2.RandomChoice(steps)


@dataclass(frozen=True)
class BatchMixing:
    """(images (N, C, H, W) float, labels (N,) int64, generator) -> (mixed images, targets (N, classes) float
    that sum to 1 per image)."""

    mixup: float
    cutmix: float
    classes: int

    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        with global_rng_from(generator, images.device):
            return _transform(self.mixup, self.cutmix, self.classes)(images, labels)


def build_mixing(mixup: float, cutmix: float, classes: int) -> BatchMixing | None:
    """--mixup ALPHA and --cutmix ALPHA -> the mixing step, or None when both are 0."""
    return BatchMixing(mixup, cutmix, classes) if mixup > 0 or cutmix > 0 else None
