"""Seeded, stratified splitting of labelled data (the validation carve-out and default test splits)."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from ..errors import ConvlabError


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (keep, held_out) index arrays; held_out has about `fraction` of each class."""
    if not 0.0 < fraction < 1.0:
        raise ConvlabError(f"split fraction must be between 0 and 1, got {fraction}")
    index = np.arange(len(labels))
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    # Stratify only when every class can give at least one sample to each side.
    stratify = labels if counts.min() >= 2 and round(fraction * len(labels)) >= len(counts) else None
    keep, held = train_test_split(index, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(held)
