"""A detection run's data from its config: the dataset as read, its validation images and the model's input."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.batches import Normalization
from ..data.registry import parse_data_name
from ..errors import ConvlabError
from .targets import Annotated, DetectionSet

DEFAULT_SIDE = 320  # the longer side images are resized to when --image-size is not given (CPU-practical)


@dataclass
class DetectionData:
    """The splits of one detection run; validation images are `val_rows` of `set.train`."""

    set: DetectionSet
    train_rows: np.ndarray
    val_rows: np.ndarray | None
    side: int  # the longer side of the model's input, in pixels

    @property
    def classes(self) -> list[str]:
        return self.set.classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.side, self.side)

    @property
    def test(self) -> list[Annotated]:
        return self.set.test

    @property
    def issues(self) -> list[dict]:
        return self.set.issues

    @property
    def notes(self) -> list[str]:
        return self.set.notes

    @property
    def box_issues(self) -> list[dict]:
        return self.set.box_issues

    def train_items(self) -> list[Annotated]:
        return [self.set.train[i] for i in self.train_rows]

    def val_items(self) -> list[Annotated] | None:
        return None if self.val_rows is None else [self.set.train[i] for i in self.val_rows]

    def normalization(self) -> Normalization:
        """Identity: torchvision's detectors normalize inside (their transform holds the ImageNet mean/std)."""
        return Normalization([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])


def read_detection_data(conf, spec: str | None = None, data_dir: str | None = None) -> DetectionSet:
    """The dataset a config (or `spec`, another dataset) names, read by its registry entry for the config's task
    (COCO files give boxes to a detection run, masks to an instance segmentation run)."""
    entry, arg = parse_data_name(spec or conf.data.name)
    task = conf.data.task
    if task and task not in entry.tasks:
        raise ConvlabError(f"--data {spec or conf.data.name}: its labels are for {' or '.join(entry.tasks)}, not "
                           f"{task}; give data labelled for {task}")
    entry = entry.for_task(task)
    directory = Path(data_dir or conf.data.data_dir).expanduser() if (data_dir or conf.data.data_dir) else None
    if directory is not None and not directory.is_dir():
        raise ConvlabError(f"--data-dir {directory} does not exist or is not a folder")
    found = entry.loader(directory, arg, conf.train.seed)
    if conf.data.strict and found.issues:
        first = found.issues[0]
        raise ConvlabError(f"cannot read image {first['path']}: {first['problem']} (--strict stops at the first "
                           "unreadable file; remove or replace it, or train without --strict to skip such files)")
    return found


def load_detection_data(conf) -> DetectionData:
    """The run's detection data: read, then --val-fraction of the training images held out (by image, seeded)."""
    found = read_detection_data(conf)
    if not found.train:
        raise ConvlabError(f"--data {conf.data.name}: the training split has no images")
    train_rows, val_rows = hold_out(len(found.train), conf.data.val_fraction, conf.train.seed)
    return DetectionData(found, train_rows, val_rows, conf.data.image_size or DEFAULT_SIDE)


def hold_out(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """--val-fraction of `count` images held out for validation, drawn with the seed (at least one when the
    fraction is above 0): (training rows, validation rows or None), each sorted."""
    rows = np.random.default_rng(seed).permutation(count)
    n_val = int(round(count * val_fraction))
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    if n_val >= count:
        raise ConvlabError(f"--val-fraction {val_fraction} leaves no training image of {count}; lower it")
    return np.sort(rows[n_val:]), (np.sort(rows[:n_val]) if n_val else None)
