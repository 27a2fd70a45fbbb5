"""Batches of segmentation images: decoded once, resized to the run's input, kept in memory, yielded as (N, C,
S, S) normalized images and (N, S, S) int64 class maps, in the same order (and sharded the same way) as
data/batches.py's BatchLoader."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batches import Normalization
from .targets import IGNORE, Masked


def fit_longer(image: torch.Tensor, mask: torch.Tensor | None, side: int):
    """(C, H, W) float image and (H, W) mask -> both with their longer side `side` (bilinear / nearest, aspect
    kept)."""
    height, width = image.shape[1:]
    if max(height, width) == side:
        return image, mask
    scale = side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if mask is not None:
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(torch.uint8)
    return image, mask


def pad_to(image: torch.Tensor, mask: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad right and bottom to side x side: the image with 0 (the mean, once normalized), the mask with IGNORE
    (padding is no class, so neither the loss nor the metrics count it)."""
    height, width = image.shape[1:]
    if (height, width) == (side, side):
        return image, mask
    image = F.pad(image, (0, side - width, 0, side - height))
    mask = F.pad(mask, (0, side - width, 0, side - height), value=IGNORE)
    return image, mask


class SegmentationLoader:
    """Iterates (images, masks) batches: images (N, C, S, S) float32 normalized, masks (N, S, S) int64 with
    IGNORE = 255 where no class is known (or padded), both on `device`.

    Each image is decoded once (`pixels(item)` -> float32 (H, W, C) in [0, 1]), its longer side resized to
    `side`; augmentation runs on the resized image and mask before padding. Shuffling and augmentation draw from
    `generator` only, so a seed fixes the batches and a resumed run, restoring the generator's state, replays
    them. With `world_size` > 1 every rank draws the same permutation, pads it to a multiple of world_size and
    takes every world_size-th index from `rank`, as BatchLoader does.
    """

    def __init__(self, items: list[Masked], pixels: Callable[[Masked], np.ndarray], side: int, norm: Normalization,
                 batch_size: int, device: torch.device | str, shuffle: bool = False, augment=None,
                 generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False):
        self.side, self.batch_size = side, batch_size
        self.device = torch.device(device)
        self.shuffle, self.augment = shuffle, augment
        self.generator = generator or torch.Generator().manual_seed(0)
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        channels = len(norm.mean)
        self.mean = torch.tensor(norm.mean, dtype=torch.float32).view(channels, 1, 1)
        self.std = torch.tensor(norm.std, dtype=torch.float32).view(channels, 1, 1)
        self.images: list[torch.Tensor] = []  # float32 (C, h, w) in [0, 1], longer side `side`
        self.masks: list[torch.Tensor] = []  # uint8 (h, w)
        for item in items:
            image = torch.from_numpy(np.ascontiguousarray(pixels(item).transpose(2, 0, 1)))
            image, mask = fit_longer(image, torch.from_numpy(item.mask), side)
            self.images.append(image.contiguous())
            self.masks.append(mask.contiguous())

    def __len__(self) -> int:
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        """Images per epoch on this rank."""
        return -(-len(self.images) // self.world_size)  # ceil: shards are padded to equal size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            padded = self.num_samples * self.world_size
            order = torch.cat([order, order[:padded - n]])[self.rank::self.world_size]
        for start in range(0, len(order), self.batch_size):
            pairs = [self._sample(i) for i in order[start:start + self.batch_size].tolist()]
            images = torch.stack([image for image, _ in pairs]).to(self.device, non_blocking=True)
            masks = torch.stack([mask for _, mask in pairs]).to(self.device, non_blocking=True).long()
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, masks

    def _sample(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[index], self.masks[index]
        if self.augment is not None:
            image, mask = self.augment(image, mask, self.generator)
        image = (image - self.mean) / self.std
        return pad_to(image, mask, self.side)
