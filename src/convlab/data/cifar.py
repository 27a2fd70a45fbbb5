"""The CIFAR-10 python format: restricted reading of its pickled batches, and writing it for tests."""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import ConvlabError
from .arrays import ImageArrays, Splits
from .idx import GZIP_LEVEL

BATCHES_FOLDER = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
PIXELS = 3 * 32 * 32  # one row of b'data': 1024 red, then 1024 green, then 1024 blue values
MAX_MEMBER_BYTES = 1 << 30  # a real batch is 31 MB; refuse to read absurd archive members


def read_cifar10(source: str | Path) -> Splits:
    """Read CIFAR-10 from its batches folder or from the cifar-10-python.tar.gz archive.

    Returns train (50,000 for the real set) and test (10,000) as (N, 3, 32, 32) uint8
    with class names from batches.meta.
    """
    source = Path(source)
    if source.is_dir():
        files = _read_folder(source)
    elif source.is_file():
        files = _read_archive(source)
    else:
        raise ConvlabError(f"CIFAR-10 source {source} does not exist; pass the {BATCHES_FOLDER} folder "
                           f"or {ARCHIVE_NAME}")

    meta_name, meta_bytes = files[META_FILE]
    classes = _class_names(_unpickle(meta_bytes, meta_name), meta_name)
    train_parts = [_batch_arrays(*files[name], len(classes)) for name in TRAIN_BATCHES]
    train = ImageArrays(np.concatenate([p.images for p in train_parts]),
                        np.concatenate([p.labels for p in train_parts]))
    test = _batch_arrays(*files[TEST_BATCH], len(classes))
    return Splits(name="cifar10", train=train, test=test, classes=classes, hflip=True)


def _read_folder(folder: Path) -> dict[str, tuple[str, bytes]]:
    """Batch file name -> (name to show in errors, content) from an unpacked batches folder."""
    wanted = [META_FILE, *TRAIN_BATCHES, TEST_BATCH]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise ConvlabError(f"CIFAR-10 folder {folder} is missing {', '.join(missing)}; pass the complete "
                           f"{BATCHES_FOLDER} folder unpacked from {ARCHIVE_NAME}, or the archive itself")
    files = {}
    for name in wanted:
        try:
            files[name] = (str(folder / name), (folder / name).read_bytes())
        except OSError as err:
            raise ConvlabError(f"cannot read CIFAR-10 file {folder / name}: {err.strerror or err}") from err
    return files


def _read_archive(archive: Path) -> dict[str, tuple[str, bytes]]:
    """Batch file name -> (name to show in errors, content), read straight from the archive.

    Members are read into memory, never extracted, so a member named '../x' or a link
    cannot write anywhere; only regular files at '<anything>/cifar-10-batches-py/NAME'
    or at the top level are used.
    """
    wanted = {META_FILE, *TRAIN_BATCHES, TEST_BATCH}
    files = {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or not parts or parts[-1] not in wanted or ".." in parts:
                    continue
                if len(parts) > 1 and parts[-2] != BATCHES_FOLDER:
                    continue
                if member.size > MAX_MEMBER_BYTES:
                    raise ConvlabError(f"{archive}: member {member.name} is {member.size} bytes, too large "
                                       "for a CIFAR-10 batch; download the archive again")
                handle = tar.extractfile(member)
                files[parts[-1]] = (f"{archive}:{member.name}", handle.read())
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ConvlabError(f"cannot read CIFAR-10 archive {archive} ({err}); download it again") from err
    missing = sorted(wanted - set(files))
    if missing:
        raise ConvlabError(f"CIFAR-10 archive {archive} lacks {', '.join(missing)} under {BATCHES_FOLDER}/; "
                           "download it again")
    return files


def _batch_arrays(shown: str, content: bytes, num_classes: int) -> ImageArrays:
    """One data/test batch -> (N, 3, 32, 32) uint8 images and (N,) labels, validated."""
    batch = _unpickle(content, shown)
    if b"data" not in batch or b"labels" not in batch:
        raise ConvlabError(f"{shown}: not a CIFAR-10 batch (no b'data' and b'labels' entries); "
                           "download the data again")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ConvlabError(f"{shown}: b'data' should be a uint8 (N, {PIXELS}) array, got {got}; "
                           "download the data again")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConvlabError(f"{shown}: b'labels' is not a list of integers ({err})") from err
    if labels.shape != (len(data),):
        raise ConvlabError(f"{shown}: {len(data)} images but {labels.size} labels; download the data again")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ConvlabError(f"{shown}: labels must lie in 0..{num_classes - 1} (batches.meta names "
                           f"{num_classes} classes), found {labels.min()}..{labels.max()}")
    # (N, 3072) -> (N, 3, 32, 32): each row is the red plane, then green, then blue, row-major.
    images = np.ascontiguousarray(data.reshape(len(data), 3, 32, 32))
    return ImageArrays(images, labels)


def _class_names(meta: dict, shown: str) -> list[str]:
    names = meta.get(b"label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise ConvlabError(f"{shown}: no b'label_names' list of class names; download the data again")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


# --- restricted unpickling ---------------------------------------------------------------

def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch may name: what numpy needs to rebuild an array.

    The real files were written by Python 2 with `numpy.core.multiarray`; numpy 2 moved it
    to `numpy._core.multiarray`. Both spellings map to the same functions.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{module}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for _codecs.encode: Python 3 protocol-2 pickles spell bytes as encode(str, 'latin1')."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed")
    return text.encode("latin1")


class _BatchUnpickler(pickle.Unpickler):
    """An Unpickler that can rebuild numpy arrays, lists and dicts and nothing else."""

    allowed = _numpy_globals()

    def __init__(self, file, shown: str):
        super().__init__(file, encoding="bytes")
        self.shown = shown

    def find_class(self, module: str, name: str):
        found = self.allowed.get((module, name))
        if found is None:
            raise ConvlabError(f"{self.shown}: refusing to load: the pickle names {module}.{name}, which a "
                               "CIFAR-10 batch never needs (the file may run code); use the official files")
        return found


def _unpickle(content: bytes, shown: str) -> dict:
    """A batch's dict with bytes keys (str keys, as re-pickled copies may have, become bytes)."""
    try:
        loaded = _BatchUnpickler(io.BytesIO(content), shown).load()
    except ConvlabError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged pickle fails with many exception types
        raise ConvlabError(f"{shown}: not a readable CIFAR-10 batch ({type(err).__name__}: {err}); "
                           "download the data again") from err
    if not isinstance(loaded, dict):
        raise ConvlabError(f"{shown}: not a CIFAR-10 batch (holds a {type(loaded).__name__}, not a dict)")
    return {key.encode() if isinstance(key, str) else key: value for key, value in loaded.items()}


# --- writing (tests and benchmarks) -------------------------------------------------------

def write_cifar10(directory: str | Path, train_images: np.ndarray, train_labels: np.ndarray,
                  test_images: np.ndarray, test_labels: np.ndarray, classes: list[str]) -> Path:
    """Write a CIFAR-10 python dataset under directory/cifar-10-batches-py and return that folder.

    Images are (N, 3, 32, 32) uint8; the train set is cut into 5 batches like the original
    (so it needs at least 5 images). Uses plain pickle protocol 2, as the originals did.
    """
    folder = Path(directory) / BATCHES_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    train_images, test_images = np.asarray(train_images), np.asarray(test_images)
    for images in (train_images, test_images):
        if images.dtype != np.uint8 or images.shape[1:] != (3, 32, 32):
            raise ValueError(f"CIFAR-10 images must be uint8 (N, 3, 32, 32), got {images.dtype} {images.shape}")
    pieces = np.array_split(np.arange(len(train_images)), len(TRAIN_BATCHES))
    for number, (name, index) in enumerate(zip(TRAIN_BATCHES, pieces), start=1):
        _write_batch(folder / name, f"training batch {number} of 5", train_images[index],
                     np.asarray(train_labels)[index])
    _write_batch(folder / TEST_BATCH, "testing batch 1 of 1", test_images, np.asarray(test_labels))
    meta = {
        b"num_cases_per_batch": len(pieces[0]),
        b"label_names": [c.encode("utf-8") for c in classes],
        b"num_vis": PIXELS,
    }
    with open(folder / META_FILE, "wb") as out:
        pickle.dump(meta, out, protocol=2)
    return folder


def _write_batch(path: Path, label: str, images: np.ndarray, labels: np.ndarray) -> None:
    batch = {
        b"batch_label": label.encode("ascii"),
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), PIXELS),  # (N, 3, 32, 32) -> (N, 3072)
        b"filenames": [f"image_{i:05d}.png".encode("ascii") for i in range(len(images))],
    }
    with open(path, "wb") as out:
        pickle.dump(batch, out, protocol=2)


def write_cifar10_archive(batches_folder: str | Path, archive: str | Path) -> Path:
    """Pack a batches folder into a .tar.gz laid out like cifar-10-python.tar.gz."""
    batches_folder, archive = Path(batches_folder), Path(archive)
    with tarfile.open(archive, "w:gz", compresslevel=GZIP_LEVEL) as tar:
        tar.add(batches_folder, arcname=BATCHES_FOLDER)
    return archive
