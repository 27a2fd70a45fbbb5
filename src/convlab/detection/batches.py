"""Batches of detection images: decoded once, kept in memory as uint8, yielded as the lists torchvision's
detectors take, in the same order (and sharded the same way) as data/batches.py's BatchLoader."""
from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import ConvlabError
from .targets import Annotated
from .transforms import DetectionAugmentation


def resize_longer(image: np.ndarray, side: int | None) -> tuple[np.ndarray, float]:
    """RGB uint8 (H, W, 3) -> the image with its longer side `side` (bilinear, aspect kept) and the scale
    applied (boxes times scale are on the resized image). side None: the image as it is, scale 1."""
    height, width = image.shape[:2]
    if side is None or max(height, width) == side:
        return image, 1.0
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.array(Image.fromarray(image).resize(size, Image.BILINEAR)), scale


def _decode(item: Annotated) -> np.ndarray:
    try:
        with Image.open(item.path) as image:
            return np.array(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, ValueError) as err:
        raise ConvlabError(f"cannot read image {item.path}: {err}") from None


class DetectionLoader:
    """Iterates (images, targets) batches: images a list of float32 (3, H, W) tensors in [0, 1] on `device`,
    targets a list of {"boxes": (K, 4) float32 xyxy, "labels": (K,) int64} on `device`, with "masks" (K, H, W)
    uint8 where the items have instance masks (resized and augmented with the image).

    Each image is decoded once and kept as uint8, its longer side resized to `max_side` when given (boxes
    scaled with it; `truth` holds the items in those coordinates, what validation scores against). Shuffling
    and augmentation draw from `generator` only, so a seed fixes the batches and a resumed run, restoring the
    generator's state, replays them. With `world_size` > 1 every rank draws the same permutation, pads it to
    a multiple of world_size and takes every world_size-th index from `rank`, as BatchLoader does.
    """

    def __init__(self, items: list[Annotated], batch_size: int, device: torch.device | str, shuffle: bool = False,
                 augment: DetectionAugmentation | None = None, generator: torch.Generator | None = None,
                 rank: int = 0, world_size: int = 1, max_side: int | None = None,
                 classes: list[str] | None = None):
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.augment = augment
        self.generator = generator or torch.Generator().manual_seed(0)
        self.rank, self.world_size = rank, world_size
        self.classes = classes
        self.images: list[torch.Tensor] = []  # uint8 (3, H, W), on the CPU: the augmentation runs there
        self.truth: list[Annotated] = []
        for item in items:
            image, scale = resize_longer(_decode(item), max_side)
            self.images.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
            self.truth.append(_scaled(item, scale, image.shape[1], image.shape[0]))

    def __len__(self) -> int:
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        """Images per epoch on this rank."""
        return -(-len(self.images) // self.world_size)  # ceil: shards are padded to equal size

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[dict]]]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            padded = self.num_samples * self.world_size
            order = torch.cat([order, order[:padded - n]])[self.rank::self.world_size]
        for start in range(0, len(order), self.batch_size):
            images, targets = [], []
            for index in order[start:start + self.batch_size].tolist():
                image, target = self._sample(index)
                images.append(image.to(self.device, non_blocking=True).float().div_(255))
                targets.append({k: v.to(self.device) for k, v in target.items()})
            yield images, targets

    def _sample(self, index: int) -> tuple[torch.Tensor, dict]:
        item = self.truth[index]
        objects = item.iscrowd == 0  # crowd regions are not objects to learn (as torchvision's references)
        image = self.images[index]
        target = {"boxes": torch.from_numpy(item.boxes[objects]), "labels": torch.from_numpy(item.labels[objects])}
        if item.masks is not None:
            target["masks"] = torch.from_numpy(item.masks[objects]).to(torch.uint8)
        if self.augment is not None:
            image, target = self.augment.apply(image, target, self.generator)
        return image, {**target, "boxes": target["boxes"].float().reshape(-1, 4), "labels": target["labels"].long()}


def _scaled(item: Annotated, scale: float, width: int, height: int) -> Annotated:
    """The item in the coordinates of its image resized by `scale` (areas by scale squared, instance masks
    resized to width x height, nearest neighbour)."""
    if scale == 1.0:
        return item
    masks = None if item.masks is None else resize_masks(item.masks, width, height)
    return replace(item, width=width, height=height, boxes=item.boxes * np.float32(scale),
                   area=item.area * np.float32(scale * scale), masks=masks)


def resize_masks(masks: np.ndarray, width: int, height: int) -> np.ndarray:
    """(K, H, W) bool -> (K, height, width) bool, nearest neighbour (as v2.Resize moves a tv_tensors.Mask)."""
    if not len(masks):
        return np.zeros((0, height, width), dtype=bool)
    resized = torch.nn.functional.interpolate(torch.from_numpy(masks)[:, None].float(), size=(height, width),
                                              mode="nearest-exact")
    return resized[:, 0].numpy() > 0.5
