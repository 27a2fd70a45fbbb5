"""A segmentation run's data from its config: the dataset as read, its validation images, the model's input."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.batches import Normalization
from ..data.registry import parse_data_name
from ..detection.run_data import hold_out
from ..errors import ConvlabError
from .targets import Masked, SegmentationSet

DEFAULT_SIDE = 320  # the longer side images are resized to when --image-size is not given (CPU-practical)
STATISTICS_IMAGES = 64  # training images the normalization is measured on


@dataclass
class SegmentationData:
    """The splits of one segmentation run; validation images are `val_rows` of `set.train`."""

    set: SegmentationSet
    train_rows: np.ndarray
    val_rows: np.ndarray | None
    side: int  # the longer side of the model's input, in pixels
    channels: int  # 1 when every training image is gray (a scan), else 3 (gray images are repeated)
    decoded: dict = field(default_factory=dict, repr=False)  # path -> (native array, scale): each file read once

    @property
    def classes(self) -> list[str]:
        return self.set.classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.side, self.side)

    @property
    def test(self) -> list[Masked]:
        return self.set.test

    @property
    def issues(self) -> list[dict]:
        return self.set.issues

    @property
    def notes(self) -> list[str]:
        return self.set.notes

    @property
    def box_issues(self) -> list[dict]:
        return []  # masks have no boxes to drop

    def train_items(self) -> list[Masked]:
        return [self.set.train[i] for i in self.train_rows]

    def val_items(self) -> list[Masked] | None:
        return None if self.val_rows is None else [self.set.train[i] for i in self.val_rows]

    def normalization(self) -> Normalization:
        """Per-channel mean and std of the training pixels (pixel / the format's maximum), as a classifier's;
        measured on up to STATISTICS_IMAGES images."""
        sums, squares, count = np.zeros(self.channels), np.zeros(self.channels), 0
        for item in self.train_items()[:STATISTICS_IMAGES]:
            pixels = self.pixels(item).reshape(-1, self.channels)
            sums += pixels.sum(0)
            squares += (pixels.astype(np.float64) ** 2).sum(0)
            count += len(pixels)
        mean = sums / count
        std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
        return Normalization([float(m) for m in mean], [float(max(s, 1e-3)) for s in std])

    def pixels(self, item: Masked) -> np.ndarray:
        """The item's image as float32 (H, W, channels) in [0, 1], decoded once per run."""
        return as_channels(*decode(item.path, self.decoded), self.channels)


def decode(path, cache: dict) -> tuple[np.ndarray, float]:
    """read_image through `cache`."""
    from .images import read_image  # lazy: start-up time

    if path not in cache:
        cache[path] = read_image(path)
    return cache[path]


def as_channels(image: np.ndarray, scale: float, channels: int) -> np.ndarray:
    """(H, W, C) native values -> float32 (H, W, channels) in [0, 1]: gray repeated for an RGB model, RGB
    averaged for a gray one."""
    pixels = image.astype(np.float32) / np.float32(scale)
    if pixels.shape[2] == channels:
        return pixels
    if channels == 3:
        return np.repeat(pixels[..., :1], 3, axis=2)
    return pixels.mean(axis=2, keepdims=True)


def read_segmentation_data(conf, spec: str | None = None, data_dir: str | None = None) -> SegmentationSet:
    """The dataset a config (or `spec`, another dataset) names, read by its registry entry for segmentation."""
    entry, arg = parse_data_name(spec or conf.data.name)
    directory = Path(data_dir or conf.data.data_dir).expanduser() if (data_dir or conf.data.data_dir) else None
    if directory is not None and not directory.is_dir():
        raise ConvlabError(f"--data-dir {directory} does not exist or is not a folder")
    found = entry.for_task("segment").loader(directory, arg, conf.train.seed)
    if conf.data.strict and found.issues:
        first = found.issues[0]
        raise ConvlabError(f"cannot read image {first['path']}: {first['problem']} (--strict stops at the first "
                           "unreadable file; remove or replace it, or train without --strict to skip such files)")
    return found


def load_segmentation_data(conf, channels: int | None = None) -> SegmentationData:
    """The run's data: read, then --val-fraction of the training images held out (by image, seeded). `channels`:
    what pretrained weights take (None: 1 when every training image is gray, else 3)."""
    found = read_segmentation_data(conf)
    if not found.train:
        raise ConvlabError(f"--data {conf.data.name}: the training split has no images")
    train_rows, val_rows = hold_out(len(found.train), conf.data.val_fraction, conf.train.seed)
    decoded: dict = {}
    if channels is None:
        channels = 1 if all(decode(item.path, decoded)[0].shape[2] == 1 for item in found.train) else 3
    return SegmentationData(found, train_rows, val_rows, conf.data.image_size or DEFAULT_SIDE,
                            channels, decoded)
