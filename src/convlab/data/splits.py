"""Seeded, stratified splitting of labelled data (the validation carve-out and default test splits).

Written with NumPy rather than sklearn's train_test_split: importing sklearn costs 1.5-3 s, a fifth of a
whole MNIST run. The sizes follow sklearn's (held-out total = ceil(fraction * N)); tests compare the two.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ConvlabError


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (keep, held_out) sorted index arrays; held_out has about `fraction` of each class."""
    if not 0.0 < fraction < 1.0:
        raise ConvlabError(f"split fraction must be between 0 and 1, got {fraction}")
    labels = np.asarray(labels)
    return _split(labels, math.ceil(fraction * len(labels)), seed)


def random_split(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) sorted index arrays of `count` rows, about `fraction` held out at random (seeded): for
    rows with several labels, which have no one class to stratify by."""
    if not 0.0 < fraction < 1.0:
        raise ConvlabError(f"split fraction must be between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(count)
    held = math.ceil(fraction * count)
    return np.sort(order[held:]), np.sort(order[:held])


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` sorted indices, about the same share of each class (every index when count >= N).

    For a few images of a split that lists its classes one after the other (an image folder): its first
    `count` would all be of the first class.
    """
    labels = np.asarray(labels)
    if count >= len(labels):
        return np.arange(len(labels))
    return _split(labels, count, seed)[1]


def _split(labels: np.ndarray, n_held: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    present, counts = np.unique(labels, return_counts=True)
    # Stratify only when every class can give at least one sample to each side.
    if counts.min() < 2 or n_held < len(present) or len(labels) - n_held < len(present):
        order = rng.permutation(len(labels))
        return np.sort(order[n_held:]), np.sort(order[:n_held])
    per_class = _allocate(counts, n_held, rng)
    held = []
    for cls, take in zip(present, per_class):
        members = np.flatnonzero(labels == cls)
        held.append(rng.permutation(members)[:take])
    held_index = np.sort(np.concatenate(held))
    keep = np.ones(len(labels), dtype=bool)
    keep[held_index] = False
    return np.flatnonzero(keep), held_index


def _allocate(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split `total` held-out samples over classes in proportion to `counts`, at most count-1 each.

    Floors (at least 1) first, then the remaining samples go to the largest remainders (ties broken at
    random); where the floors of 1 overshoot, the classes furthest above their share give one back.
    """
    exact = counts * total / counts.sum()
    take = np.clip(np.floor(exact).astype(np.int64), 1, counts - 1)
    remainder = exact - take + rng.random(len(counts)) * 1e-9
    for i in np.argsort(-remainder):
        if take.sum() >= total:
            break
        if take[i] < counts[i] - 1:
            take[i] += 1
    while take.sum() > total:  # the floor of 1 per class can overshoot: take back from the largest
        i = int(np.argmax(take - exact))
        take[i] -= 1
    return take
