"""scikit-learn's embedded 8x8 handwritten digits: the default dataset, no files needed.

The digits are read from the CSV file scikit-learn ships (sklearn/datasets/data/digits.csv.gz) as
sklearn.datasets.load_digits reads it, without importing sklearn: its import costs 1-4 s, more than
the default digits run trains. tests/data/test_digits.py checks the arrays against load_digits.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .arrays import ImageArrays, Splits
from .registry import register_dataset
from .splits import stratified_split

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, so every run of every model is scored on the same 360 images


@register_dataset(
    "digits",
    description="scikit-learn's 1,797 real 8x8 handwritten digits (embedded, no download)",
    shape=(1, 8, 8),
    num_classes=10,
    recipe=dict(model="small-cnn", optimizer="adam", lr=3e-3, schedule="onecycle", epochs=20,
                batch_size=32, augment="none", weight_decay=1e-4),
)
def load_digits(data_dir, arg, image_size) -> Splits:
    pixels, labels = read_digits()
    # Pixel values are 0..16; scale to the 0..255 of every other image source.
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return Splits(
        name="digits",
        train=ImageArrays(images[train_idx], labels[train_idx]),
        test=ImageArrays(images[test_idx], labels[test_idx]),
        classes=[str(d) for d in range(10)],
        hflip=False,
    )


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float pixels 0..16 and int64 labels, as sklearn.datasets.load_digits gives them."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():  # another layout: let scikit-learn read it
        from sklearn.datasets import load_digits as sk_digits

        bunch = sk_digits()
        return bunch.images, bunch.target.astype(np.int64)
    data = np.loadtxt(csv, delimiter=",")  # 65 columns: 64 pixels, then the label
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
