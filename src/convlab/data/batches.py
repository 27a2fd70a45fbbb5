"""Batches from in-memory uint8 arrays: sliced, normalized and augmented as whole tensors on the device."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .arrays import ImageArrays
from .augment import Augmentation
from .sampling import epoch_order, shard
from .mixing import BatchMixing


@dataclass
class Normalization:
    """Per-channel mean and std of pixel values scaled to [0, 1]."""

    mean: list[float]
    std: list[float]

    @classmethod
    def of(cls, images: np.ndarray, rows: np.ndarray | None = None) -> "Normalization":
        """Measure it on (N, C, H, W) uint8 training images, or on those `rows` of them (the training rows of a
        split that also holds the validation rows); an even sample of 10,000 when there are more."""
        if rows is not None:
            rows = np.sort(rows)
            if len(rows) > 10_000:
                rows = rows[::-(-len(rows) // 10_000)]
            images = images[rows]  # reads only the sampled rows, also from a memmap
        elif len(images) > 10_000:
            images = images[::-(-len(images) // 10_000)]  # a strided view: cheap on a memmap too
        scaled = images.astype(np.float64) / 255.0
        mean = scaled.mean(axis=(0, 2, 3))
        std = scaled.std(axis=(0, 2, 3))
        return cls([float(m) for m in mean], [float(max(s, 1e-3)) for s in std])

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalized float32 (N, C, H, W), contiguous.

        (x / 255 - mean) / std as one converting copy, one multiply and one add in place: three
        vectorized passes (a mixed-dtype fused op was 4x slower). Best on NCHW: the per-channel
        broadcast over a channels_last tensor ran 4x slower, so convert the result afterwards.
        """
        std = torch.tensor(self.std, dtype=torch.float64).view(1, -1, 1, 1)
        scale = (1.0 / (255.0 * std)).to(device=images.device, dtype=torch.float32)
        shift = (-torch.tensor(self.mean, dtype=torch.float64).view(1, -1, 1, 1) / std).to(
            device=images.device, dtype=torch.float32)
        out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
        return out.copy_(images).mul_(scale).add_(shift)


class BatchLoader:
    """Iterates (images, labels) batches of a dataset held as one uint8 tensor on `device`.

    Each batch is augmented as uint8 (`augment`), normalized, erased (`erase`, on normalized values as
    torchvision's RandomErasing) and mixed (`mix`: labels become soft targets (B, classes)).
    Shuffling and augmentation draw from `generator`, so a seed fixes the whole order; `sampler`
    "balanced" draws the classes evenly instead of shuffling (data/sampling.py). With `world_size` > 1
    (distributed training) every rank draws the same order, pads it to a multiple of world_size and
    takes every world_size-th index from `rank`: disjoint, equal shards.
    `channels_last` yields batches in NHWC memory format (same values, faster convs and pooling).
    """

    def __init__(self, data: ImageArrays, batch_size: int, norm: Normalization, device: torch.device,
                 shuffle: bool = False, augment: Augmentation | None = None,
                 generator: torch.Generator | None = None, channels_last: bool = False,
                 rank: int = 0, world_size: int = 1, sampler: str = "shuffle", erase: Augmentation | None = None,
                 mix: BatchMixing | None = None):
        self.images = torch.from_numpy(data.images).to(device)
        self.labels = torch.from_numpy(data.labels).to(device)
        self.label_array = data.labels  # on the host: the balanced sampler counts the classes
        self.batch_size = batch_size
        self.norm = norm
        self.shuffle, self.sampler = shuffle, sampler
        self.augment, self.erase, self.mix = augment, erase, mix
        self.generator = generator or torch.Generator().manual_seed(0)
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        """Images per epoch on this rank."""
        return -(-len(self.labels) // self.world_size)  # ceil: shards are padded to equal size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(self.label_array, self.sampler if self.shuffle else None, self.generator)
        order = shard(order, self.rank, self.world_size).to(self.images.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            images = self.images[index]
            if self.augment is not None:
                images = self.augment(images, self.generator)
            images = self.norm.apply(images)
            labels = self.labels[index]
            if self.erase is not None:
                images = self.erase(images, self.generator)
            if self.mix is not None:
                images, labels = self.mix(images, labels, self.generator)
            if self.channels_last:  # after normalizing: the per-channel broadcast is slow in NHWC
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels
