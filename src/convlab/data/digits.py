"""scikit-learn's embedded 8x8 handwritten digits: the default dataset, no files needed."""
from __future__ import annotations

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
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    # Pixel values are 0..16; scale to the 0..255 of every other image source.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    return Splits(
        name="digits",
        train=ImageArrays(images[train_idx], labels[train_idx]),
        test=ImageArrays(images[test_idx], labels[test_idx]),
        classes=[str(d) for d in range(10)],
        hflip=False,
    )
