"""What a segmentation dataset is once read: images with a class index for every pixel, whatever the files were."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE = 255  # a mask value that is no class: left out of the loss and the metrics (as torchvision's references)


@dataclass
class Masked:
    """One image and its masks. `mask` is (H, W) uint8, a class index (into the dataset's classes, 0 usually
    "background") for every pixel of the image as stored, IGNORE where unknown. `instances` (K, H, W) bool and
    `labels` (K,) hold one mask per object where the format has them (COCO, YOLO-seg, instance-id PNGs);
    None for class maps only."""

    path: Path
    mask: np.ndarray  # (H, W) uint8
    instances: np.ndarray | None = None  # (K, H, W) bool
    labels: np.ndarray | None = None  # (K,) int64, 0-based class index of each instance
    image_id: int = 0

    def __post_init__(self):
        self.mask = np.asarray(self.mask, dtype=np.uint8)
        if self.mask.ndim != 2:
            raise ValueError(f"a mask is (H, W), got shape {self.mask.shape}")
        if self.instances is not None:
            self.instances = np.asarray(self.instances, dtype=bool).reshape(-1, *self.mask.shape)
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)

    @property
    def height(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]


@dataclass
class SegmentationSet:
    """A segmentation dataset: its classes and splits. `test` is the format's held-out split (test/ or val/);
    a format with one split is split by image with the seed before it gets here. Validation rows come out of
    `train` (--val-fraction), as for classification and detection."""

    name: str
    classes: list[str]  # index 0 is the background where the format has one
    train: list[Masked]
    test: list[Masked]
    issues: list[dict] = field(default_factory=list)  # {"path", "problem"}: files skipped (unreadable image)
    notes: list[str] = field(default_factory=list)  # printed as note lines (e.g. "split by image with seed 0")
    split_names: dict[str, str] = field(default_factory=lambda: {"train": "train", "test": "test"})


def pixel_counts(items: list[Masked], classes: list[str]) -> dict[str, int]:
    """Pixels per class over `items` (the data line prints them; IGNORE pixels are not counted)."""
    total = np.zeros(len(classes), dtype=np.int64)
    for item in items:
        counts = np.bincount(item.mask.ravel(), minlength=256)
        total += counts[:len(classes)]
    return dict(zip(classes, total.tolist()))
