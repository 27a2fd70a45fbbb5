"""Detection batches: images decoded once and kept in memory, yielded as lists (sizes differ) with their boxes."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from PIL import Image

from .targets import Annotated


def resize_longer(image: np.ndarray, side: int | None) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 -> the image with its longer side `side` (aspect kept), and the scale applied."""
    height, width = image.shape[:2]
    if side is None or max(height, width) == side:
        return image, 1.0
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)), scale


class DetectionLoader:
    """Iterates (images, targets): a list of (3, H, W) float tensors in [0, 1] and a list of {"boxes" (K, 4)
    xyxy, "labels" (K,)} on `device`, in the images' resized pixels.

    As data/batches.py's BatchLoader: shuffling and augmentation draw from `generator`, so a seed fixes the
    order (and a checkpoint replays it); under torchrun every rank draws the same permutation, padded to a
    multiple of world_size, and takes every world_size-th image. `truth` holds the items in the resized
    pixels, in order, for validation metrics; crowd regions are left out of the training targets.
    """

    def __init__(self, items: list[Annotated], batch_size: int, device: torch.device, shuffle: bool = False,
                 augment=None, generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1,
                 max_side: int | None = None, classes: list[str] | None = None):
        from .run import read_rgb

        self.images, self.truth = [], []
        for item in items:
            image, scale = resize_longer(read_rgb(item.path), max_side)
            self.images.append(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous())
            self.truth.append(Annotated(item.path, image.shape[1], image.shape[0], item.boxes * scale, item.labels,
                                        item.iscrowd, item.area * scale * scale, item.image_id))
        self.batch_size = batch_size
        self._device = torch.device(device)
        self.shuffle = shuffle
        self.augment = augment
        self.generator = generator or torch.Generator().manual_seed(0)
        self.rank, self.world_size = rank, world_size
        self.classes = classes  # the dataset's: validation scores the truth against them

    @property
    def device(self) -> torch.device:
        return self._device

    def __len__(self) -> int:
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        """Images per epoch on this rank."""
        return -(-len(self.images) // self.world_size)

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[dict]]]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            padded = self.num_samples * self.world_size
            order = torch.cat([order, order[:padded - n]])[self.rank::self.world_size]
        for start in range(0, len(order), self.batch_size):
            images, targets = [], []
            for i in order[start:start + self.batch_size].tolist():
                image, truth = self.images[i], self.truth[i]
                objects = truth.iscrowd == 0  # crowd regions are not objects to learn (as torchvision's references)
                boxes, labels = torch.from_numpy(truth.boxes[objects]), torch.from_numpy(truth.labels[objects])
                if self.augment is not None:
                    image, boxes, labels = self.augment(image, boxes, labels, self.generator)
                images.append(image.to(self._device, dtype=torch.float32).div_(255))
                targets.append({"boxes": boxes.to(self._device, dtype=torch.float32),
                                "labels": labels.to(self._device, dtype=torch.int64)})
            yield images, targets
