"""The registered file datasets loaded from --data-dir, their validation, and the embedded digits."""
from __future__ import annotations

import numpy as np
import pytest

from convlab.data import load_dataset
from convlab.data.cifar import write_cifar10_archive
from convlab.data.idx import write_idx
from convlab.data.registry import parse_data_name
from convlab.errors import ConvlabError


def _assert_idx_loaded(splits, arrays):
    assert splits.shape == (1, 28, 28) and splits.num_classes == 10
    np.testing.assert_array_equal(splits.train.images[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.train.labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(splits.test.images[:, 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.test.labels, arrays["t10k-labels-idx1-ubyte"])
    assert splits.train.labels.dtype == np.int64


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("subfolder", [".", "mnist", "MNIST/raw"])
def test_mnist_from_data_dir(offline, tmp_path, write_mnist, gz, subfolder):
    arrays = write_mnist(tmp_path / "data" / subfolder, gz=gz)
    splits = load_dataset("mnist", data_dir=tmp_path / "data")
    _assert_idx_loaded(splits, arrays)
    assert splits.classes == [str(d) for d in range(10)] and not splits.hflip
    assert not offline.exists()  # nothing touched the cache


def test_fashion_mnist_from_data_dir(offline, tmp_path, write_mnist):
    arrays = write_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    splits = load_dataset("fashion-mnist", data_dir=tmp_path)
    _assert_idx_loaded(splits, arrays)
    assert splits.classes[0] == "T-shirt/top" and splits.classes[-1] == "Ankle boot" and splits.hflip


def test_image_size_resizes(offline, tmp_path, write_mnist):
    write_mnist(tmp_path)
    assert load_dataset("mnist", data_dir=tmp_path, image_size=32).shape == (1, 32, 32)


def test_count_mismatch_names_both_files(offline, tmp_path, write_mnist):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
    with pytest.raises(ConvlabError, match=r"train-images-idx3-ubyte.gz holds 30 images but "
                                           r".*train-labels-idx1-ubyte.gz holds 29 labels"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("name, array, message", [
    ("t10k-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8), r"t10k-labels-idx1-ubyte.gz: found label 10"),
    ("t10k-images-idx3-ubyte.gz", np.zeros((12, 32, 32), np.uint8), r"t10k-images.*shape \(N, 28, 28\)"),
    ("t10k-labels-idx1-ubyte.gz", np.zeros((12, 2), np.uint8), r"t10k-labels.*shape \(N,\)"),
])
def test_bad_idx_content(offline, tmp_path, write_mnist, name, array, message):
    write_mnist(tmp_path)
    write_idx(tmp_path / name, array)
    with pytest.raises(ConvlabError, match=message):
        load_dataset("mnist", data_dir=tmp_path)


def _assert_cifar_loaded(splits, data):
    assert splits.name == "cifar10" and splits.shape == (3, 32, 32) and splits.hflip
    np.testing.assert_array_equal(splits.train.images, data["train_images"])
    np.testing.assert_array_equal(splits.test.labels, data["test_labels"])
    assert splits.classes == data["classes"]


def test_cifar10_from_folder_archive_or_batches_folder(offline, tmp_path, write_cifar):
    data = write_cifar(tmp_path / "folder")
    _assert_cifar_loaded(load_dataset("cifar10", data_dir=tmp_path / "folder"), data)
    _assert_cifar_loaded(load_dataset("cifar10", data_dir=data["batches"]), data)
    (tmp_path / "archive").mkdir()
    write_cifar10_archive(data["batches"], tmp_path / "archive" / "cifar-10-python.tar.gz")
    _assert_cifar_loaded(load_dataset("cifar10", data_dir=tmp_path / "archive"), data)
    assert not offline.exists()


def test_digits():
    splits = load_dataset("digits")
    assert len(splits.train) == 1437 and len(splits.test) == 360
    assert splits.shape == (1, 8, 8) and splits.num_classes == 10
    train_share = np.bincount(splits.train.labels) / len(splits.train)
    test_share = np.bincount(splits.test.labels) / len(splits.test)
    assert np.abs(train_share - test_share).max() < 0.01


def test_registered_entries_match_what_loads(offline, tmp_path, write_mnist, write_cifar):
    write_mnist(tmp_path)
    write_cifar(tmp_path)
    for name in ["mnist", "fashion-mnist", "cifar10", "digits"]:
        entry, _ = parse_data_name(name)
        splits = load_dataset(name, data_dir=tmp_path)
        assert splits.shape == entry.shape and splits.num_classes == entry.num_classes
        assert entry.recipe["model"] and entry.recipe["epochs"] > 0
