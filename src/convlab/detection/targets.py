"""What a detection dataset is once read: images with their boxes, whatever the file format was."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Annotated:
    """One image and its objects. Boxes are (K, 4) float32 [x1, y1, x2, y2] in pixels of the image as stored
    (pixel corners: a box over columns 0..9 has x1 = 0, x2 = 10); labels (K,) int64 index `classes`; an image
    with K = 0 is a negative (kept: it teaches the detector what is not an object)."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (K, 4) float32 xyxy
    labels: np.ndarray  # (K,) int64, 0-based index into the dataset's classes
    iscrowd: np.ndarray | None = None  # (K,) uint8; None: all 0
    area: np.ndarray | None = None  # (K,) float32 (a segmentation's area where the file gives one); None: box area
    image_id: int = 0
    masks: np.ndarray | None = None  # (K, H, W) bool, one per object, where the data has them (instance masks)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.masks is not None:
            self.masks = np.asarray(self.masks, dtype=bool).reshape(-1, self.height, self.width)
        if self.iscrowd is None:
            self.iscrowd = np.zeros(len(self.labels), dtype=np.uint8)
        if self.area is None:
            self.area = box_areas(self.boxes)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DetectionSet:
    """A detection dataset: its classes and splits. `test` is the format's held-out split (COCO/YOLO "val",
    VOC "val"/"test"); a format with one split is split by image with the seed before it gets here. The
    validation rows come out of `train` (--val-fraction), as for classification."""

    name: str
    classes: list[str]
    train: list[Annotated]
    test: list[Annotated]
    issues: list[dict] = field(default_factory=list)  # {"path", "problem"}: files skipped (unreadable image)
    box_issues: list[dict] = field(default_factory=list)  # {"file", "index", "problem"}: boxes dropped/clipped
    notes: list[str] = field(default_factory=list)  # printed as note lines (e.g. "split by image with seed 0")
    # the splits' names in the files (e.g. train2017/val2017), so a converted dataset keeps them
    split_names: dict[str, str] = field(default_factory=lambda: {"train": "train", "test": "test"})


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """(K, 4) xyxy -> (K,) float32 areas."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)


def box_counts(items: list[Annotated], classes: list[str]) -> dict[str, int]:
    """Boxes per class name over `items`, in the order of `classes` (classes with no box count 0)."""
    counts = np.bincount(np.concatenate([item.labels for item in items] or [np.zeros(0, np.int64)]),
                         minlength=len(classes))
    return {name: int(count) for name, count in zip(classes, counts)}
