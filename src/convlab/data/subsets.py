"""Smaller datasets from loaded ones: a subset of the classes (--classes) and N labels per class
(--train-per-class), for transfer and few-shot studies."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlabError
from .arrays import ImageArrays, Splits


def keep_classes(splits: Splits, names: list[str]) -> Splits:
    """Keep the images of the named classes in both splits; labels are renumbered in the given order."""
    unknown = [name for name in names if name not in splits.classes]
    if unknown:
        raise ConvlabError(f"--classes {','.join(names)}: {splits.name} has no class {unknown[0]!r}; "
                           f"its classes are {', '.join(splits.classes)}")
    if len(set(names)) != len(names) or len(names) < 2:
        raise ConvlabError(f"--classes {','.join(names)}: name at least two different classes")
    old = [splits.classes.index(name) for name in names]
    mapping = np.full(len(splits.classes), -1, dtype=np.int64)
    mapping[old] = np.arange(len(old))

    def select(arrays: ImageArrays) -> ImageArrays:
        index = np.flatnonzero(mapping[arrays.labels] >= 0)
        return ImageArrays(arrays.images[index], mapping[arrays.labels[index]])

    # The files the loader skipped stay listed, whichever class they were in: they are what the run's
    # data_issues.json reports, and a run on a subset of the classes read (and skipped) them all the same.
    return Splits(splits.name, select(splits.train), select(splits.test), list(names), splits.hflip,
                  list(splits.notes), [dict(issue) for issue in splits.issues])


def per_class(arrays: ImageArrays, count: int, seed: int) -> ImageArrays:
    """`count` images of every class present, drawn with `seed`; classes with fewer keep all of theirs."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(arrays.labels):
        index = np.flatnonzero(arrays.labels == label)
        chosen.append(rng.choice(index, size=min(count, len(index)), replace=False))
    return arrays.subset(np.sort(np.concatenate(chosen))) if chosen else arrays


def select_subset(splits: Splits, classes: str | None, train_per_class: int, seed: int) -> Splits:
    """Apply --classes (both splits) then --train-per-class (the training split only)."""
    if classes:
        splits = keep_classes(splits, [name.strip() for name in classes.split(",") if name.strip()])
    if train_per_class:
        splits.train = per_class(splits.train, train_per_class, seed)
        splits.notes.append(f"--train-per-class {train_per_class}: {len(splits.train)} labelled training images")
    return splits
