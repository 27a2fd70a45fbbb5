"""Fixtures that write small datasets in the real file formats (MNIST IDX, CIFAR-10 batches)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convlab.data.cifar import write_cifar10
from convlab.data.idx import write_idx

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_mnist(folder: Path, n_train: int = 30, n_test: int = 12, gz: bool = True, seed: int = 0) -> dict:
    """Write the 4 MNIST files into folder; return {file name without .gz: array written}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + ".gz" if gz else name), array)
    return arrays


def _write_cifar(folder: Path, n_train: int = 20, n_test: int = 6, seed: int = 0) -> dict:
    """Write a tiny CIFAR-10 under folder/cifar-10-batches-py; return the arrays and that folder."""
    rng = np.random.default_rng(seed)
    data = {
        "train_images": rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
        "test_labels": (np.arange(n_test) * 3) % 10,
        "classes": CIFAR_CLASSES,
    }
    data["batches"] = write_cifar10(folder, **data)
    return data


@pytest.fixture
def write_mnist():
    """write_mnist(folder, n_train=30, n_test=12, gz=True, seed=0) -> {name: array}."""
    return _write_mnist


@pytest.fixture
def write_cifar():
    """write_cifar(folder, n_train=20, n_test=6, seed=0) -> dict of arrays, classes and 'batches' folder."""
    return _write_cifar
