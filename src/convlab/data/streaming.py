"""Large image folders: a decoded-image cache on disk (a uint8 memmap) and a DataLoader that streams it.

Decoding JPEGs costs far more than training reads: the cache decodes every image once, at the
training resolution, into `$CONVLAB_HOME/decoded/<key>.u8` (N, C, S, S) with DataLoader workers and a
progress bar. Later epochs, and later runs on the same files, read batches from the memory-mapped
file instead of decoding. The key hashes the file paths, sizes, modification times, channels and size,
so a changed folder gets a new cache. When the disk lacks room the caller falls back to decoding
into memory.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .augment import Augmentation
from .batches import Normalization
from .decode import load_image
from .download import cache_root
from .sampling import epoch_order, shard
from .mixing import BatchMixing

MEMORY_LIMIT_BYTES = 2 << 30  # auto: decoded sets larger than this stream from the disk cache
DISK_MARGIN_BYTES = 256 << 20  # leave this much free after writing a cache
DECODE_BATCH = 64


def decoded_bytes(count: int, channels: int, size: int) -> int:
    return count * channels * size * size


def wants_streaming(setting: str, count: int, channels: int, size: int) -> bool:
    """memory / streaming as asked; auto streams when the decoded images exceed MEMORY_LIMIT_BYTES."""
    if setting == "auto":
        return decoded_bytes(count, channels, size) > MEMORY_LIMIT_BYTES
    return setting == "streaming"


def cache_key(files: list[Path], channels: int, size: int) -> str:
    digest = hashlib.sha256(f"{channels}x{size}".encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class _DecodeFiles(Dataset):
    """Batches of files decoded to (B, C, S, S) uint8 in worker processes."""

    def __init__(self, files: list[Path], channels: int, size: int):
        self.files, self.channels, self.size = files, channels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitems__(self, indices: list[int]) -> np.ndarray:
        return np.stack([load_image(self.files[i], self.channels, self.size) for i in indices])

    def __getitem__(self, index: int) -> np.ndarray:
        return self.__getitems__([index])[0]


def _identity(batch):
    return batch


def build_decoded_cache(files: list[Path], channels: int, size: int, workers: int | None = None,
                        folder: Path | None = None) -> np.ndarray | None:
    """The decoded images of `files` as a read-only memmap (N, C, size, size), built on first use.

    Returns None when the cache folder lacks the room (the caller decodes into memory instead).
    """
    folder = Path(folder) if folder else cache_root() / "decoded"
    shape = (len(files), channels, size, size)
    path = folder / f"{cache_key(files, channels, size)}.u8"
    if path.is_file() and path.stat().st_size == decoded_bytes(*shape[:2], size):
        return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    if free < decoded_bytes(*shape[:2], size) + DISK_MARGIN_BYTES:
        return None
    partial = path.with_suffix(".partial")
    try:
        out = np.memmap(partial, dtype=np.uint8, mode="w+", shape=shape)
        workers = (os.cpu_count() or 1) if workers is None else workers
        batches = DataLoader(_DecodeFiles(files, channels, size), batch_size=DECODE_BATCH, num_workers=workers,
                             collate_fn=_identity, generator=torch.Generator().manual_seed(0))
        _fill(out, batches, len(files))
        out.flush()
        del out
        os.replace(partial, path)  # only a complete cache ever carries the final name
    except OSError:
        partial.unlink(missing_ok=True)
        return None
    return np.memmap(path, dtype=np.uint8, mode="r", shape=shape)


def _fill(out: np.ndarray, batches, total: int) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(TextColumn("decoding images into the cache"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True,
                  disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("decode", total=total)
        start = 0
        for batch in batches:
            out[start:start + len(batch)] = batch
            start += len(batch)
            progress.update(task, completed=start)


class _MemmapBatches(Dataset):
    """Whole uint8 batches read from a (memory-mapped) array by (rows, seed) jobs."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, job: tuple[list[int], int]):
        """(B, C, H, W) uint8 images, (B,) labels and the batch's augmentation seed."""
        indices, seed = job
        rows = np.sort(np.asarray(indices))  # sorted rows read the file front to back
        return torch.from_numpy(np.ascontiguousarray(self.images[rows])), torch.from_numpy(self.labels[rows]), seed


@dataclass(frozen=True)
class BatchPrep:
    """uint8 batch -> training batch: augmentation (seeded per batch), normalization, erasing, mixing (labels ->
    soft targets), memory format.

    The same steps, in the same order, as BatchLoader.
    """

    norm: Normalization
    augment: Augmentation | None = None
    channels_last: bool = False
    erase: Augmentation | None = None
    mix: BatchMixing | None = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        if self.augment is not None:
            images = self.augment(images, generator)
        images = self.norm.apply(images)  # in NCHW, where the per-channel broadcast is fast
        if self.erase is not None:
            images = self.erase(images, generator)
        if self.mix is not None:
            images, labels = self.mix(images, labels, generator)
        images = images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        return images, labels


def default_workers(device: torch.device) -> int:
    """DataLoader workers for streaming: none on a CPU, one per core (at most 4) for a GPU.

    On a CPU the main thread reads and converts a batch itself: handing 224x224 batches between
    processes cost more than the reading (2,200 img/s without workers, 1,400 with 2, on 2 cores), and
    the training step, seconds per batch there, dwarfs both. A GPU run gains from workers reading
    ahead while the GPU computes.
    """
    return 0 if device.type == "cpu" else min(4, os.cpu_count() or 1)


class StreamingLoader:
    """Iterates (images, labels) batches of rows `index` of an on-disk uint8 array; BatchLoader's interface.

    Rows are read as whole uint8 batches (by DataLoader workers on a GPU run, see default_workers),
    then augmented, normalized, erased, mixed and put in the run's memory format on the training device. The
    order (`sampler`: shuffle or balanced, data/sampling.py) and each batch's augmentation are seeded from
    `generator`, so a seed fixes the batches whatever the workers.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray | None, batch_size: int,
                 norm: Normalization, device: torch.device, shuffle: bool = False,
                 augment: Augmentation | None = None, generator: torch.Generator | None = None,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1, workers: int | None = None,
                 sampler: str = "shuffle", erase: Augmentation | None = None, mix: BatchMixing | None = None):
        self.images, self.labels = images, np.asarray(labels)
        self.index = np.arange(len(self.labels)) if index is None else np.asarray(index)
        self.batch_size, self._device, self.shuffle, self.sampler = batch_size, device, shuffle, sampler
        self.prep = BatchPrep(norm, augment, channels_last, erase, mix)
        self.generator = generator or torch.Generator().manual_seed(0)
        self.rank, self.world_size = rank, world_size
        self.workers = default_workers(device) if workers is None else workers

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def num_samples(self) -> int:
        return -(-len(self.index) // self.world_size)

    def __len__(self) -> int:
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    def _order(self) -> np.ndarray:
        order = epoch_order(self.labels[self.index], self.sampler if self.shuffle else None, self.generator)
        return self.index[shard(order, self.rank, self.world_size).numpy()]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rows = self._order().tolist()
        seeds = torch.randint(0, 2 ** 62, (len(self),), generator=self.generator).tolist()
        jobs = [(rows[i * self.batch_size:(i + 1) * self.batch_size], seed) for i, seed in enumerate(seeds)]
        # Its own generator: the DataLoader leaves the global RNG alone.
        batches = DataLoader(_MemmapBatches(self.images, self.labels), sampler=jobs, batch_size=None,
                             num_workers=self.workers, pin_memory=self._device.type == "cuda",
                             collate_fn=_identity, generator=torch.Generator().manual_seed(0))
        for images, labels, seed in batches:
            yield self.prep(images.to(self._device, non_blocking=True), labels.to(self._device, non_blocking=True),
                            seed)
