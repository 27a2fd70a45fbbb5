"""In-memory image data: uint8 NCHW arrays with integer labels, and the train/test pair."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ImageArrays:
    """A labelled image set held in memory.

    images: (N, C, H, W) uint8; labels: (N,) int64 class indices, or (N, classes) uint8 0/1 for data with several
    labels per image (tasks/multilabel.py).
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.ndim == 2 and len(self.labels) == len(self.images):
            self.labels = self.labels.astype(np.uint8, copy=False)  # multi-hot: one column per class
            return
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must be ({len(self.images)},) or ({len(self.images)}, classes), got "
                             f"{self.labels.shape}")
        self.labels = self.labels.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def multi_hot(self) -> bool:
        """Several labels per image: labels are (N, classes) 0/1."""
        return self.labels.ndim == 2

    def subset(self, index: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.images[index], self.labels[index])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


@dataclass
class Splits:
    """What every dataset loader returns: train and test sets and the class names.

    hflip says whether a horizontal flip keeps the label (true for photos, false for digits).
    """

    name: str
    train: ImageArrays
    test: ImageArrays
    classes: list[str]
    hflip: bool = False
    notes: list[str] = field(default_factory=list)
    issues: list[dict] = field(default_factory=list)  # files skipped as unreadable: {"path", "problem"}

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape

    @property
    def num_classes(self) -> int:
        return len(self.classes)
