"""--sampler balanced: an epoch of as many draws as images with the classes drawn evenly, seeded by the loader's
generator, the same in the in-memory and the streaming loader, and sharded per rank like the shuffle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convlab.data.arrays import ImageArrays
from convlab.data.batches import BatchLoader, Normalization
from convlab.data.sampling import epoch_order
from convlab.data.streaming import StreamingLoader
from convlab.errors import ConvlabError

CPU = torch.device("cpu")
NORM = Normalization([0.0, 0.0], [1.0, 1.0])


def tagged(labels) -> ImageArrays:
    """Images that carry their own row number (high and low byte in two channels), so a batch names its rows."""
    rows = np.arange(len(labels))
    images = np.stack([rows // 256, rows % 256], axis=1).astype(np.uint8).reshape(-1, 2, 1, 1)
    return ImageArrays(images, np.asarray(labels))


def rows_of(images: torch.Tensor) -> list[int]:
    values = torch.round(images.flatten(1) * 255).long()  # NORM leaves x / 255
    return (values[:, 0] * 256 + values[:, 1]).tolist()


def epoch_rows(loader) -> list[int]:
    return [row for images, _ in loader for row in rows_of(images)]


def ten_to_one() -> np.ndarray:
    return np.array([0] * 1000 + [1] * 100)


def memory_loader(labels, seed, sampler="balanced", **kwargs) -> BatchLoader:
    return BatchLoader(tagged(labels), 64, NORM, CPU, shuffle=True, sampler=sampler,
                       generator=torch.Generator().manual_seed(seed), **kwargs)


def test_an_epoch_of_a_ten_to_one_set_draws_the_classes_evenly():
    labels = ten_to_one()
    rows = epoch_rows(memory_loader(labels, seed=0))
    assert len(rows) == 1100  # as many images per epoch as the shuffle
    drawn = np.bincount(labels[rows], minlength=2)
    # each draw is a class with probability 1/2: binomial, sd sqrt(1100 / 4) = 16.6; 4 sd of tolerance
    assert abs(drawn[1] - 550) <= 66, drawn
    rare = [row for row in rows if labels[row] == 1]
    assert len(set(rare)) <= 100 < len(rare)  # the rare images repeated
    assert len(set(rare)) >= 95  # ~ all of them: 100 (1 - e^-5.5) expected


def test_the_shuffle_keeps_the_ten_to_one_ratio():
    """The default order is unchanged: every image once, in torch.randperm's order for the seed."""
    labels = ten_to_one()
    rows = epoch_rows(memory_loader(labels, seed=3, sampler="shuffle"))
    assert rows == torch.randperm(1100, generator=torch.Generator().manual_seed(3)).tolist()


def test_three_classes_over_several_epochs():
    labels = np.array([0] * 600 + [1] * 150 + [2] * 60)
    loader = memory_loader(labels, seed=1)
    drawn = np.bincount(labels[[r for _ in range(5) for r in epoch_rows(loader)]], minlength=3)
    assert drawn.sum() == 5 * 810
    # 4050 draws, each class p = 1/3: sd 30; 4 sd
    assert np.all(np.abs(drawn - 1350) <= 120), drawn


def test_same_seed_same_order_another_seed_another():
    labels = ten_to_one()
    first, again, other = (epoch_rows(memory_loader(labels, seed)) for seed in (7, 7, 8))
    assert first == again
    assert first != other
    loader = memory_loader(labels, seed=7)
    assert epoch_rows(loader) != epoch_rows(loader)  # each epoch draws anew


def test_the_streaming_loader_draws_the_same_epoch():
    labels = np.array([0] * 300 + [1] * 30 + [2] * 90)
    data = tagged(labels)
    index = np.arange(20, 420)  # the training rows: the first 20 are held out
    streamed = StreamingLoader(data.images, data.labels, index, 32, NORM, CPU, shuffle=True, sampler="balanced",
                               generator=torch.Generator().manual_seed(5), workers=0)
    memory = BatchLoader(data.subset(index), 32, NORM, CPU, shuffle=True, sampler="balanced",
                         generator=torch.Generator().manual_seed(5))
    streamed_batches = [sorted(rows_of(images)) for images, _ in streamed]
    memory_batches = [sorted(rows_of(images)) for images, _ in memory]  # the subset keeps its rows' tags
    assert streamed_batches == memory_batches  # the streaming loader reads a batch's rows sorted
    drawn = np.bincount(labels[sum(streamed_batches, [])], minlength=3)
    assert drawn.sum() == 400 and np.all(np.abs(drawn - 133) <= 40), drawn  # sd 9.4


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_rank_draws_the_same_order_and_takes_its_shard(world_size):
    labels = np.array([0] * 500 + [1] * 50 + [2] * 1)  # 551 rows: shards are padded
    whole = epoch_rows(memory_loader(labels, seed=2))
    per_rank = -(-551 // world_size)
    padded = whole + whole[:per_rank * world_size - 551]
    for rank in range(world_size):
        loader = memory_loader(labels, seed=2, rank=rank, world_size=world_size)
        assert epoch_rows(loader) == padded[rank::world_size]
        assert loader.num_samples == per_rank


def test_validation_order_ignores_the_sampler():
    loader = BatchLoader(tagged(ten_to_one()), 100, NORM, CPU, sampler="balanced")  # shuffle off
    assert epoch_rows(loader) == list(range(1100))


def test_an_unknown_sampler_is_named():
    with pytest.raises(ConvlabError, match="unknown --sampler 'even'; choose from shuffle, balanced"):
        epoch_order(ten_to_one(), "even", torch.Generator())


def test_a_fine_tunes_cached_features_follow_the_balanced_order():
    """A head-only stage trains on cached features in the training loader's order: balanced there too."""
    from convlab.training.feature_cache import FeatureBatches

    labels = ten_to_one()
    full = memory_loader(labels, seed=4)
    features = torch.arange(1100, dtype=torch.float32).view(-1, 1)  # each row's feature is its row number
    cached = FeatureBatches(full, features, torch.from_numpy(labels), True, torch.Generator().manual_seed(4),
                            streamed=False)
    rows = [int(v) for batch, _ in cached for v in batch.flatten()]
    assert rows == epoch_rows(full)
    assert abs(np.bincount(labels[rows])[1] - 550) <= 66
