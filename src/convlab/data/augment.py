"""Whole-batch augmentation on the training device: random shifts (crop with padding) and flips."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own random (dy, dx) in [-max_shift, max_shift], zero-filled.

    Same as a random crop of the image padded by max_shift, done for the whole batch with one gather.
    images: (N, C, H, W).
    """
    if max_shift <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4)  # (N, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)  # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2)


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right. images: (N, C, H, W)."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


@dataclass(frozen=True)
class ShiftFlip:
    """Random shifts of up to `shift` pixels, then random left-right flips when `flip`.

    A plain dataclass rather than a closure, so DataLoader workers can receive it on any platform.
    """

    shift: int
    flip: bool

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_shift(images, self.shift, generator)
        if self.flip:
            images = random_hflip(images, generator)
        return images


def build_augmentation(level: str, image_size: int, hflip: bool) -> Augmentation | None:
    """none: nothing; light: shifts of 1/8 of the size; standard: shifts plus flips when labels allow."""
    if level == "none":
        return None
    return ShiftFlip(max(1, image_size // 8), level == "standard" and hflip)
