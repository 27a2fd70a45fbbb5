"""The decoded-image cache and the streaming loader: same pixels as decoding into memory, built once."""
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch

from convlab import train
from convlab.data.arrays import ImageArrays
from convlab.data.batches import BatchLoader, Normalization
from convlab.data.imagefolder import list_images, load_image, load_image_folder
from convlab.data.streaming import StreamingLoader, build_decoded_cache, wants_streaming


def test_cache_holds_the_decoded_images_and_is_reused(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "imgs", per_class=4, size=(20, 14))
    files = list_images(root)
    cache = build_decoded_cache(files, 3, 8, workers=0, folder=tmp_path / "cache")
    assert isinstance(cache, np.memmap) and cache.shape == (12, 3, 8, 8)
    expected = np.stack([load_image(f, 3, 8) for f in files])
    np.testing.assert_array_equal(np.asarray(cache), expected)
    built = list((tmp_path / "cache").iterdir())
    assert len(built) == 1 and built[0].suffix == ".u8"
    mtime = built[0].stat().st_mtime_ns
    again = build_decoded_cache(files, 3, 8, workers=0, folder=tmp_path / "cache")
    np.testing.assert_array_equal(np.asarray(again), expected)
    assert built[0].stat().st_mtime_ns == mtime  # read, not rebuilt
    build_decoded_cache(files, 1, 8, workers=0, folder=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2  # other channels: another cache


def test_no_room_on_disk_returns_none_and_the_folder_falls_back_to_memory(tmp_path, make_image_folder,
                                                                          monkeypatch):
    root = make_image_folder(tmp_path / "imgs", per_class=5)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 0))
    assert build_decoded_cache(list_images(root), 3, 8, workers=0, folder=tmp_path / "cache") is None
    splits = load_image_folder(root, 8, loader="streaming")
    assert not isinstance(splits.train.images, np.memmap)
    assert any("no room for the decoded-image cache" in note for note in splits.notes)


def test_streamed_splits_equal_the_in_memory_splits(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "imgs", per_class=6)
    memory = load_image_folder(root, 8, loader="memory")
    streamed = load_image_folder(root, 8, loader="streaming")
    assert isinstance(streamed.train.images, np.memmap) and isinstance(streamed.test.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(streamed.train.images), memory.train.images)
    np.testing.assert_array_equal(streamed.train.labels, memory.train.labels)
    np.testing.assert_array_equal(np.asarray(streamed.test.images), memory.test.images)
    np.testing.assert_array_equal(streamed.test.labels, memory.test.labels)


def test_auto_streams_only_large_sets():
    assert not wants_streaming("auto", 1000, 3, 64)
    assert wants_streaming("auto", 100_000, 3, 224)
    assert wants_streaming("streaming", 1, 1, 4) and not wants_streaming("memory", 10**7, 3, 224)


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_loader_gives_the_batch_loader_batches(workers):
    rng = np.random.default_rng(0)
    data = ImageArrays(rng.integers(0, 256, (37, 3, 5, 5), dtype=np.uint8), rng.integers(0, 4, 37))
    norm = Normalization.of(data.images)
    index = np.arange(3, 37)
    streamed = StreamingLoader(data.images, data.labels, index, 8, norm, torch.device("cpu"), workers=workers)
    memory = BatchLoader(data.subset(index), 8, norm, torch.device("cpu"))
    assert len(streamed) == len(memory) == 5
    for (xs, ys), (xm, ym) in zip(streamed, memory):
        torch.testing.assert_close(xs, xm)
        assert torch.equal(ys, ym)


def test_shuffled_epochs_cover_every_row_once():
    data = ImageArrays(np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1), np.arange(20))
    loader = StreamingLoader(data.images, data.labels, None, 6, Normalization([0.0], [1.0]), torch.device("cpu"),
                             shuffle=True)
    first = torch.cat([y for _, y in loader]).tolist()
    second = torch.cat([y for _, y in loader]).tolist()
    assert sorted(first) == sorted(second) == list(range(20))
    assert first != second


@pytest.mark.slow
def test_train_streams_an_image_folder(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "imgs", per_class=10)
    run = train(data=f"imagefolder:{root}", loader="streaming", model="tiny-cnn", image_size=8, epochs=4,
                batch_size=4,
                out=str(tmp_path / "run"), quiet=True)
    assert run.metrics["epochs_run"] == 4
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert run.metrics["accuracy"] >= 0.8  # three solid colours are easy


def test_augmented_batches_depend_on_the_seed_not_on_the_workers():
    """Each batch's shifts and flips are seeded from the loader's generator: 0 or 2 workers, same batches."""
    from convlab.data.augment import build_augmentation

    rng = np.random.default_rng(1)
    data = ImageArrays(rng.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8), rng.integers(0, 3, 30))
    norm = Normalization.of(data.images)
    augment = build_augmentation("standard", 8, hflip=True)

    def epoch(workers, seed, augment=augment):
        loader = StreamingLoader(data.images, data.labels, None, 7, norm, torch.device("cpu"), shuffle=True,
                                 augment=augment, generator=torch.Generator().manual_seed(seed),
                                 channels_last=True, workers=workers)
        return [(x, y) for x, y in loader]

    inline, workers, other = epoch(0, 5), epoch(2, 5), epoch(0, 6)
    for (xa, ya), (xb, yb) in zip(inline, workers):
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)
        assert torch.equal(ya, yb)
        assert xa.is_contiguous(memory_format=torch.channels_last)
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(inline, other))
    plain = epoch(0, 5, augment=None)  # the same order, not augmented
    assert all(torch.equal(ya, yp) for (_, ya), (_, yp) in zip(inline, plain))
    assert not torch.equal(torch.cat([x for x, _ in inline]), torch.cat([x for x, _ in plain]))
