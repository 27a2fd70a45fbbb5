"""The order of a training epoch: a shuffle, or a class-balanced draw for imbalanced folders; and a rank's shard.

Both draw from the loader's generator, so a seed fixes the order, and every rank of a distributed run (the
same seed) draws the same order and takes its own shard of it.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from ..errors import ConvlabError


def shuffled(labels: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Every image once, in a random order."""
    return torch.randperm(len(labels), generator=generator)


def balanced(labels: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """As many draws as images, each class equally likely and each image of a class equally likely within it
    (torch's WeightedRandomSampler with image weights 1 / its class's count): the images of rare classes are
    repeated, those of common classes skipped more often."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return torch.zeros(0, dtype=torch.long)
    weights = 1.0 / np.bincount(labels)[labels]
    draws = WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.float64), len(labels), replacement=True,
                                  generator=generator)
    return torch.as_tensor(list(draws), dtype=torch.long)


SAMPLERS = {"shuffle": shuffled, "balanced": balanced}


def epoch_order(labels: np.ndarray, sampler: str | None, generator: torch.Generator) -> torch.Tensor:
    """(N,) int64 positions into `labels` for one epoch; `sampler` None keeps the stored order (validation)."""
    if sampler is None:
        return torch.arange(len(labels))
    if sampler not in SAMPLERS:
        raise ConvlabError(f"unknown --sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler](labels, generator)


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s share of an epoch's order: padded (from its start) to a multiple of world_size, then every
    world_size-th position from `rank`: disjoint, equal shards."""
    if world_size <= 1:
        return order
    per_rank = -(-len(order) // world_size)
    padded = per_rank * world_size
    return torch.cat([order, order[:padded - len(order)]])[rank::world_size]
