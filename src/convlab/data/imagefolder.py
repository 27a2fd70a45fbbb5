"""Your own images: folder-per-class datasets (decoding one image is data/decode.py)."""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import ConvlabError
from . import streaming
from .arrays import ImageArrays, Splits
from .decode import (GRAYSCALE_MODES, IMAGE_EXTENSIONS, UnreadableImage, list_images, load_image,  # noqa: F401
                     peek_mode)
from .registry import register_dataset
from .splits import stratified_split

DEFAULT_FOLDER_SIZE = 64  # images are squashed to 64 x 64 unless --image-size says otherwise
TEST_FRACTION = 0.2  # held out as the test set when the folder has no test/ or val/
PROGRESS_MIN_IMAGES = 500  # below this, decoding is quick enough to need no progress bar


def peek_modes(files: list[Path], strict: bool = False) -> tuple[dict[Path, str], list[UnreadableImage]]:
    """Each readable file's colour mode (from its header, nothing decoded) and the files that cannot be read;
    strict: raise UnreadableImage at the first of those instead."""
    modes, issues = {}, []
    for path in files:
        try:
            modes[path] = peek_mode(path)
        except UnreadableImage as err:
            if strict:
                raise
            issues.append(err)
    return modes, issues


def load_image_folder(root: str | Path, image_size: int | None, seed: int = 0, strict: bool = False,
                      loader: str = "auto") -> Splits:
    """Load root/CLASS/*.jpg (or root/train/CLASS and root/test|val/CLASS) into Splits.

    Images become (C, S, S) uint8 with S = image_size or DEFAULT_FOLDER_SIZE; C is 1 when every
    image is grayscale, else 3. Without a test/ or val/ folder, a stratified 20% is held out.
    Unreadable files (corrupt, truncated, empty, not images, decompression bombs) are skipped and
    listed in `splits.issues`; strict=True raises UnreadableImage at the first one instead.
    loader: memory decodes into RAM; streaming (or auto, for large folders) decodes once into a
    memory-mapped cache on disk (data/streaming.py) and the splits' images are views of it.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConvlabError(f"image folder {root} does not exist or is not a folder; pass "
                           "--data imagefolder:PATH with a folder holding one subfolder per class")
    size = image_size or DEFAULT_FOLDER_SIZE
    notes = []
    if (root / "train").is_dir():
        train_dir = root / "train"
        test_dir = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    else:
        train_dir, test_dir = root, None

    classes, train_files, train_labels = _scan_train(train_dir)
    if test_dir is not None:
        test_files, test_labels = _scan_test(test_dir, train_dir, classes)
        notes.append(f"imagefolder: train from {train_dir}, test from {test_dir}")
        if test_dir.name == "test" and (root / "val").is_dir():
            notes.append(f"imagefolder: {root / 'val'} is not read: validation is --val-fraction of train/ "
                         "(move val/ into train/ to train on it, or rename it test/ to test on it)")
    else:
        test_files, test_labels = [], []
        notes.append(f"imagefolder: no test/ or val/ folder in {root}; holding out a stratified "
                     f"{TEST_FRACTION:.0%} of the images as the test set")

    files = train_files + test_files
    modes, issues = peek_modes(files, strict)
    channels = 1 if all(mode in GRAYSCALE_MODES for mode in modes.values()) else 3
    notes.append(f"imagefolder: {len(classes)} classes, {len(files)} images as {channels} x {size} x {size}")
    if streaming.wants_streaming(loader, len(modes), channels, size):
        readable = [i for i, path in enumerate(files) if path in modes]
        labels = np.asarray(train_labels + test_labels, dtype=np.int64)[readable]
        n_train = sum(i < len(train_files) for i in readable) if test_dir is not None else None
        streamed = _streamed_splits([files[i] for i in readable], labels, n_train, channels, size, seed, notes)
        if streamed is not None:
            return Splits(name="imagefolder", train=streamed[0], test=streamed[1], classes=classes, hflip=True,
                          notes=notes, issues=[{"path": str(err.path), "problem": err.reason} for err in issues])
    decoded = _decode_all([path for path in files if path in modes], channels, size, strict)
    issues += [item for item in decoded.values() if isinstance(item, UnreadableImage)]
    keep = [i for i, path in enumerate(files) if isinstance(decoded.get(path), np.ndarray)]
    n_train_files = len(train_files)
    train_files = [files[i] for i in keep if i < n_train_files]
    test_files = [files[i] for i in keep if i >= n_train_files]
    _check_classes_left(classes, [train_labels[i] for i in keep if i < n_train_files], train_dir, issues)
    if test_dir is not None and not test_files:
        raise ConvlabError(f"test folder {test_dir}: none of its images could be read; replace them")
    files = train_files + test_files
    images = (np.stack([decoded[path] for path in files]) if files
              else np.zeros((0, channels, size, size), np.uint8))  # (N, C, size, size)
    all_labels = train_labels + test_labels
    labels = np.asarray([all_labels[i] for i in keep], dtype=np.int64)

    if test_dir is not None:
        n_train = len(train_files)
        train = ImageArrays(images[:n_train], labels[:n_train])
        test = ImageArrays(images[n_train:], labels[n_train:])
    else:
        keep, held = stratified_split(labels, TEST_FRACTION, seed)
        train = ImageArrays(images[keep], labels[keep])
        test = ImageArrays(images[held], labels[held])
    issues.sort(key=lambda err: str(err.path))
    return Splits(name="imagefolder", train=train, test=test, classes=classes, hflip=True, notes=notes,
                  issues=[{"path": str(err.path), "problem": err.reason} for err in issues])


def _check_classes_left(classes: list[str], labels: list[int], train_dir: Path,
                        issues: list[UnreadableImage]) -> None:
    """After skipping unreadable files, every class still needs an image."""
    for index, name in enumerate(classes):
        if index not in labels:
            raise ConvlabError(f"class folder {train_dir / name}: none of its images could be read "
                               f"({sum(1 for err in issues if err.path.parent.name == name)} skipped, e.g. "
                               f"{next((str(err) for err in issues if err.path.parent.name == name), '')})")


def _streamed_splits(files: list[Path], labels: np.ndarray, n_train: int | None, channels: int, size: int,
                     seed: int, notes: list[str]) -> tuple[ImageArrays, ImageArrays] | None:
    """Train and test as slices of the decoded cache (train rows first); None when the disk lacks room."""
    if n_train is None:  # hold out the test share first, so that train and test are contiguous in the file
        keep, held = stratified_split(labels, TEST_FRACTION, seed)
        order = np.concatenate([keep, held])
        files, labels, n_train = [files[i] for i in order], labels[order], len(keep)
    cache = streaming.build_decoded_cache(files, channels, size)
    if cache is None:
        notes.append(f"imagefolder: no room for the decoded-image cache under {streaming.cache_root()}; "
                     "decoding into memory instead")
        return None
    notes.append(f"imagefolder: streaming from the decoded-image cache {cache.filename}")
    return ImageArrays(cache[:n_train], labels[:n_train]), ImageArrays(cache[n_train:], labels[n_train:])


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_train(train_dir: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names (sorted subfolders), image files and their labels; every class must have images."""
    folders = _class_folders(train_dir)
    if not folders:
        raise ConvlabError(f"no class folders in {train_dir}: put each class's images in its own "
                           f"subfolder ({train_dir}/cat/1.jpg, {train_dir}/dog/2.jpg)")
    files, labels = [], []
    for label, folder in enumerate(folders):
        found = list_images(folder)
        if not found:
            raise ConvlabError(f"class folder {folder} holds no images ({' '.join(IMAGE_EXTENSIONS)}); "
                               "add images or remove the folder")
        files += found
        labels += [label] * len(found)
    if len(folders) < 2:
        raise ConvlabError(f"{train_dir} has only one class folder ({folders[0].name}); a classifier needs "
                           "at least 2 classes, one subfolder each")
    return [f.name for f in folders], files, labels


def _scan_test(test_dir: Path, train_dir: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """Test images labelled by the train classes; a class may be missing, an unknown one is an error."""
    files, labels = [], []
    for folder in _class_folders(test_dir):
        if folder.name not in classes:
            raise ConvlabError(f"{folder} is not one of the classes in {train_dir} ({', '.join(classes)}); "
                               "rename or remove it")
        found = list_images(folder)
        files += found
        labels += [classes.index(folder.name)] * len(found)
    if not files:
        raise ConvlabError(f"test folder {test_dir} holds no images in class subfolders; add images "
                           "or remove the folder to hold out part of the training images instead")
    return files, labels


def _decode_all(files: list[Path], channels: int, size: int, strict: bool = False) -> dict:
    """Decode files in parallel threads (PIL releases the GIL) -> {path: (channels, size, size) uint8 array,
    or the UnreadableImage error of a file that failed}; strict raises the first failure instead."""
    def decode(path: Path) -> np.ndarray | UnreadableImage:
        try:
            return load_image(path, channels, size)
        except Exception as err:  # noqa: BLE001 - a decoder may fail in any way on a crafted file
            failure = err if isinstance(err, UnreadableImage) else UnreadableImage(path, str(err))
            if strict:
                raise failure from None
            return failure

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(decode, files)
        if len(files) > PROGRESS_MIN_IMAGES and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import track

            results = track(results, total=len(files), description="decoding images",
                            console=Console(stderr=True), transient=True)
        decoded = list(results)
    return dict(zip(files, decoded))


@register_dataset(
    "imagefolder",
    description="your own images, one subfolder per class (optional train/ and test/ or val/)",
    takes_argument=True,
    streams=True,
    recipe=dict(model="small-cnn", optimizer="adam", lr=2e-3, schedule="onecycle", epochs=15,
                batch_size=32, augment="standard", weight_decay=1e-4),
)
def load_imagefolder(data_dir: Path | None, arg: str | None, image_size: int | None, loader: str = "auto") -> Splits:
    """imagefolder:PATH; a relative PATH that is missing is also looked up under --data-dir."""
    root = Path(arg).expanduser()
    if not root.exists() and not root.is_absolute() and data_dir is not None and (data_dir / root).exists():
        root = data_dir / root
    return load_image_folder(root, image_size, loader=loader)
