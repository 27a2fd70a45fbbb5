"""File-based datasets (MNIST, Fashion-MNIST, CIFAR-10, image folders): where their files come from."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConvlabError
from .arrays import ImageArrays, Splits
from .cifar import ARCHIVE_NAME, BATCHES_FOLDER, META_FILE, read_cifar10
from .download import Resource, cache_root, fetch_resources
from .idx import read_idx
from .registry import register_dataset

# Official sources and the md5s torchvision checks them with (torchvision/datasets/mnist.py, cifar.py).
MNIST_URLS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MNIST_URLS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CIFAR10_URLS = ["https://www.cs.toronto.edu/~kriz/"]
CIFAR10_MD5 = {ARCHIVE_NAME: "c58f30108f718f92721af3b95e74349a"}

IDX_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot"]


@dataclass(frozen=True)
class Wanted:
    """One file a dataset needs: the names it may have in a folder, and how to download it."""

    names: tuple[str, ...]  # accepted names, first found wins (e.g. raw, then .gz)
    resource: Resource  # the downloadable form, one of names


def locate_files(dataset: str, wanted: list[Wanted], data_dir: Path | None, subfolders: list[str],
                 base_urls: list[str]) -> list[Path]:
    """Find each wanted file: in --data-dir (and its subfolders), else in the cache, else download.

    Files a user placed in the cache under a non-downloadable name (e.g. unpacked) are used
    as they are; downloadable files there are md5-checked and fetched again when corrupt.
    """
    missing_note = ""
    if data_dir is not None:
        folders = [data_dir / sub for sub in subfolders]
        found = [_first_existing(folders, item.names) for item in wanted]
        if all(path is not None for path in found):
            return found
        absent = [item.names[0] for item, path in zip(wanted, found) if path is None]
        missing_note = f"--data-dir {data_dir} lacks {', '.join(absent)} (raw or .gz); "

    cache = cache_root() / dataset
    paths, to_fetch = [], []
    for item in wanted:
        unpacked = _first_existing([cache], tuple(n for n in item.names if n != item.resource.filename))
        if unpacked is None:
            to_fetch.append(item.resource)
        paths.append(unpacked or cache / item.resource.filename)
    try:
        fetch_resources(dataset, to_fetch, base_urls, cache)
    except ConvlabError as err:
        raise ConvlabError(missing_note + str(err)) from err
    return paths


def _first_existing(folders: list[Path], names: tuple[str, ...]) -> Path | None:
    for folder in folders:
        for name in names:
            if (folder / name).exists():
                return folder / name
    return None


# --- MNIST-style IDX datasets ----------------------------------------------------------------

def _load_idx_dataset(name: str, data_dir: Path | None, subfolders: list[str], urls: list[str],
                      md5s: dict[str, str], classes: list[str], hflip: bool) -> Splits:
    wanted = [Wanted((f, f + ".gz"), Resource(f + ".gz", md5s[f + ".gz"])) for f in IDX_FILES]
    train_images, train_labels, test_images, test_labels = locate_files(name, wanted, data_dir, subfolders, urls)
    return Splits(
        name=name,
        train=_idx_pair(train_images, train_labels, len(classes)),
        test=_idx_pair(test_images, test_labels, len(classes)),
        classes=list(classes),
        hflip=hflip,
    )


def _idx_pair(images_path: Path, labels_path: Path, num_classes: int) -> ImageArrays:
    """Images (N, 28, 28) and labels (N,) files -> ImageArrays (N, 1, 28, 28)."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ConvlabError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
                           f"{images.shape}; check that this is the images file")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ConvlabError(f"{labels_path}: expected integer labels of shape (N,), got {labels.dtype} "
                           f"{labels.shape}; check that this is the labels file")
    if len(images) != len(labels):
        raise ConvlabError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
                           "labels; both files must come from the same split, replace the wrong one")
    if len(labels) and labels.max() >= num_classes:
        raise ConvlabError(f"{labels_path}: found label {labels.max()}, but the dataset has {num_classes} "
                           f"classes (0..{num_classes - 1}); check that this is the right labels file")
    return ImageArrays(images[:, None], labels.astype(np.int64))  # (N, 28, 28) -> (N, 1, 28, 28)


@register_dataset(
    "mnist",
    description="70,000 28x28 handwritten digits (IDX files; downloaded to the cache if absent)",
    shape=(1, 28, 28),
    num_classes=10,
    # Tuned for time to 98% test accuracy on a CPU (docs/speed.md): the PyTorch example's net
    # (half the multiply-adds of mnist-cnn), channels_last and a one-cycle schedule reach it in 2 epochs.
    recipe=dict(model="small-cnn", optimizer="adam", lr=3e-3, schedule="onecycle", epochs=2,
                batch_size=64, augment="none", weight_decay=0.0),
)
def load_mnist(data_dir: Path | None, arg: str | None, image_size: int | None) -> Splits:
    return _load_idx_dataset("mnist", data_dir, [".", "mnist", "MNIST/raw"], MNIST_URLS, MNIST_MD5,
                             [str(d) for d in range(10)], hflip=False)


@register_dataset(
    "fashion-mnist",
    description="70,000 28x28 Zalando clothing images in 10 classes (IDX files; downloaded if absent)",
    shape=(1, 28, 28),
    num_classes=10,
    recipe=dict(model="mnist-cnn", optimizer="adam", lr=2e-3, schedule="onecycle", epochs=8,
                batch_size=64, augment="none", weight_decay=0.0),
)
def load_fashion_mnist(data_dir: Path | None, arg: str | None, image_size: int | None) -> Splits:
    return _load_idx_dataset("fashion-mnist", data_dir, [".", "fashion-mnist", "FashionMNIST/raw"],
                             FASHION_MNIST_URLS, FASHION_MNIST_MD5, FASHION_CLASSES, hflip=True)


# --- CIFAR-10 ---------------------------------------------------------------------------------

@register_dataset(
    "cifar10",
    description="60,000 32x32 colour photos in 10 classes (python batches; downloaded if absent)",
    shape=(3, 32, 32),
    num_classes=10,
    recipe=dict(model="resnet8", optimizer="sgd", lr=0.1, momentum=0.9, schedule="onecycle", epochs=15,
                batch_size=128, augment="standard", weight_decay=5e-4),
)
def load_cifar10(data_dir: Path | None, arg: str | None, image_size: int | None) -> Splits:
    if data_dir is not None and (data_dir / META_FILE).is_file():
        return read_cifar10(data_dir)  # --data-dir is the batches folder itself
    wanted = [Wanted((BATCHES_FOLDER, ARCHIVE_NAME), Resource(ARCHIVE_NAME, CIFAR10_MD5[ARCHIVE_NAME]))]
    (source,) = locate_files("cifar10", wanted, data_dir, ["."], CIFAR10_URLS)
    return read_cifar10(source)
