"""A run's data from its config: the one definition that training and every reader of a run share.

load_dataset -> --classes and --train-per-class -> the model's channels and size -> the validation rows.
Training reads the training and validation rows of `load_run_data`; eval, report, prune, quantize, compare,
distill and export read the test split of `load_test_data` (which converts only that split), so a run trained
on `--classes 5,6,7,8,9` is evaluated on those five classes everywhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..config import Config
from ..errors import ConvlabError
from .arrays import ImageArrays, Splits
from .batches import Normalization
from .conform import conform_arrays
from .registry import load_dataset
from .splits import random_split, stratified_split
from .subsets import select_subset


@dataclass
class RunData:
    """The splits of one run; `splits.train` still holds the validation rows (a streamed split is one file)."""

    splits: Splits
    train_rows: np.ndarray
    val_rows: np.ndarray | None  # None: no validation split (--val-fraction 0)
    data_channels: int  # the dataset's own channels, before gray was repeated for a 3-channel model

    @property
    def streamed(self) -> bool:
        """The rows stay in the decoded-image cache on disk (data/streaming.py) rather than in memory."""
        return isinstance(self.splits.train.images, np.memmap)

    @property
    def classes(self) -> list[str]:
        return self.splits.classes

    @property
    def test(self) -> ImageArrays:
        return self.splits.test

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the model's input."""
        return self.splits.shape

    @property
    def issues(self) -> list[dict]:
        return self.splits.issues

    @property
    def notes(self) -> list[str]:
        return self.splits.notes

    @property
    def box_issues(self) -> list[dict]:
        return []  # a classifier's data has no boxes

    def train_arrays(self) -> ImageArrays:
        return self.splits.train if self.val_rows is None else self.splits.train.subset(self.train_rows)

    def val_arrays(self) -> ImageArrays | None:
        return None if self.val_rows is None else self.splits.train.subset(self.val_rows)

    def normalization(self) -> Normalization:
        """Mean and std of the training rows only, whichever loader reads them."""
        return Normalization.of(self.splits.train.images, self.train_rows)


def load_run_data(conf: Config, channels: int | None = None, size: tuple[int, int] | None = None,
                  who: str = "the model") -> RunData:
    """The run's splits as its config defines them; `channels`/`size` convert them to what a pretrained model
    takes (None: the data's own)."""
    splits = run_splits(conf)
    data_channels = splits.shape[0]
    if channels is not None or size is not None:
        target_channels = channels or data_channels
        target_size = list(size) if size is not None else list(splits.shape[1:])
        if isinstance(splits.train.images, np.memmap):
            check_streamable(splits.shape, target_channels, target_size, who)
        splits.train = conform_arrays(splits.train, target_channels, target_size, who)
        splits.test = conform_arrays(splits.test, target_channels, target_size, who)
    train_rows, val_rows = validation_rows(splits.train.labels, conf.data.val_fraction, conf.train.seed)
    return RunData(splits, train_rows, val_rows, data_channels)


def run_splits(conf: Config) -> Splits:
    """The dataset as the run's config loads it, with its --classes and --train-per-class; not yet converted."""
    splits = load_dataset(conf.data.name, conf.data.data_dir, conf.data.image_size, strict=conf.data.strict,
                          loader=conf.data.loader, task=conf.data.task)
    return select_subset(splits, conf.data.classes, conf.data.train_per_class, conf.train.seed)


def check_streamable(shape: tuple[int, ...], channels: int, size: list[int], who: str) -> None:
    """A streamed split is read as it lies in the decoded-image cache: gray may be repeated into more channels
    (a view, data/conform.py), anything else would copy the whole cache into memory."""
    held = "x".join(map(str, shape))
    wants = f"{who} takes {channels}x{size[0]}x{size[1]} images and the decoded-image cache holds {held}"
    if list(size) != list(shape[1:]):
        raise ConvlabError(f"{wants}; pass --image-size {size[0]} or --loader memory")
    if channels != shape[0] and shape[0] != 1:
        raise ConvlabError(f"{wants}; pass --loader memory to convert the colour images to gray in memory")


def validation_rows(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Row indices kept for training and held out (stratified, seeded) for validation; None: none held out."""
    if fraction <= 0:
        return np.arange(len(labels)), None
    # several labels per image: no class to stratify by, a seeded random share
    keep, held = random_split(len(labels), fraction, seed) if labels.ndim == 2 else \
        stratified_split(labels, fraction, seed)
    if len(keep) == 0 or len(held) == 0:
        raise ConvlabError(f"--val-fraction {fraction} leaves no training or no validation images "
                           f"({len(labels)} training images); change --val-fraction")
    return keep, held


def load_test_data(conf: Config, classes: list[str], channels: int, size: tuple[int, int] | list[int],
                   data: str | None = None, data_dir: str | None = None, who: str = "the run") -> ImageArrays:
    """The test split a run is scored on, its labels in the run's class order.

    Without `data`: the run's own test split, from `load_run_data` (its dataset, --image-size, --classes;
    `data_dir` when the files have moved). With `data` (and `data_dir`): that dataset's test split, its labels
    matched to the run's classes by name.
    """
    if data is None:
        if data_dir is not None:
            conf = dataclasses.replace(conf, data=dataclasses.replace(conf.data, data_dir=data_dir))
        splits = run_splits(conf)  # only the test split is converted: the training split is not read
    else:
        splits = load_dataset(data, data_dir, conf.data.image_size, task=conf.data.task)
    test = conform_arrays(splits.test, channels, size, who)
    return ImageArrays(test.images, map_labels(test.labels, splits.classes, classes, f"--data {data or splits.name}",
                                               who))


def test_split(data: RunData, classes: list[str], who: str = "the run") -> ImageArrays:
    """The test split of a run's data with its labels in the run's class order."""
    return ImageArrays(data.test.images, map_labels(data.test.labels, data.classes, classes,
                                                    f"--data {data.splits.name}", who))


def map_labels(labels: np.ndarray, data_classes: list[str], classes: list[str], data: str, who: str) -> np.ndarray:
    """Labels numbered by `data_classes` -> numbered by `classes` (matched by name); unknown names are refused.

    `data` names the data in the message ("--data digits"), `who` the model ("run runs/x")."""
    if data_classes == classes:
        return labels
    unknown = [c for c in data_classes if c not in classes]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConvlabError(f"{data} has classes {who} does not know: {shown} ({who} knows "
                           f"{', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); pass data with "
                           f"only those classes")
    index = np.array([classes.index(c) for c in data_classes], dtype=np.int64)
    if labels.ndim == 2:  # multi-hot: each of the data's columns moves to its class's column
        mapped = np.zeros((len(labels), len(classes)), dtype=labels.dtype)
        mapped[:, index] = labels
        return mapped
    return index[labels]
