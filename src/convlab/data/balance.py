"""Class balance of a training split: the per-class counts, the imbalance warning, inverse-frequency weights."""
from __future__ import annotations

import numpy as np

from ..errors import ConvlabError

IMBALANCE_RATIO = 10.0  # the largest class with this many times the images of the smallest: warned about
LISTED_CLASSES = 12  # up to this many classes are all listed; more: the three fewest and the three most


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K,) training images per class."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)


def counts_line(counts: np.ndarray, classes: list[str]) -> str:
    """'per class: cat 500, dog 50'; for many classes the range and the extremes only."""
    if len(classes) <= LISTED_CLASSES:
        return "per class: " + ", ".join(f"{name} {int(n)}" for name, n in zip(classes, counts))
    ranked = np.argsort(counts, kind="stable")

    def named(rows) -> str:
        return ", ".join(f"{classes[i]} {int(counts[i])}" for i in rows)

    return (f"per class: {int(counts.min())} to {int(counts.max())} images over {len(classes)} classes "
            f"(fewest: {named(ranked[:3])}; most: {named(ranked[::-1][:3])})")


def imbalance_warning(counts: np.ndarray, classes: list[str]) -> str | None:
    """A warning when the largest class has IMBALANCE_RATIO times the images of the smallest, else None."""
    small, large = int(np.argmin(counts)), int(np.argmax(counts))
    if counts[large] == 0 or counts[large] < IMBALANCE_RATIO * counts[small]:
        return None
    if counts[small] == 0:
        size = f"class {classes[small]} has no training images"
    else:
        size = (f"the largest class ({classes[large]}, {int(counts[large])}) has "
                f"{counts[large] / counts[small]:.1f}x the images of the smallest ({classes[small]}, "
                f"{int(counts[small])})")
    return f"warning: imbalanced training split: {size}; consider --class-weights auto or --sampler balanced"


def balanced_class_weights(labels: np.ndarray, classes: list[str]) -> np.ndarray:
    """(K,) float64 weights n_images / (n_classes * n_images_of_class): sklearn's compute_class_weight('balanced').

    A class with half the average count weighs 2; over the training images the weights average 1, so the
    weighted loss keeps the scale of the unweighted one (a balanced split gets weight 1 everywhere).
    """
    from sklearn.utils.class_weight import compute_class_weight  # lazy: start-up time (sklearn takes 1.5-3 s)

    labels = np.asarray(labels, dtype=np.int64)
    empty = [classes[i] for i, n in enumerate(class_counts(labels, len(classes))) if n == 0]
    if empty:
        raise ConvlabError(f"--class-weights auto: class {', '.join(empty)} has no training images, so it has no "
                           f"inverse frequency; add images of it, or leave it out with --classes")
    return compute_class_weight("balanced", classes=np.arange(len(classes)), y=labels)
