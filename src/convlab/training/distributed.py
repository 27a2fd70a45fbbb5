"""Data-parallel training with torch.distributed: started by torchrun, one process per device.

`torchrun --nproc_per_node=N -m convlab train ...` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous variables; `setup()` reads them, joins the process group (nccl on CUDA, gloo on CPU) and
tells the session which rank it is. Each rank trains on its own shard (BatchLoader's rank/world_size)
with a DistributedDataParallel model whose gradients are averaged every step; the epoch's training
metrics are all-reduced; validation runs on the whole validation split on every rank, so every rank
takes the same best-epoch and early-stopping decisions. Only rank 0 prints and writes the run folder.

Faults follow torchelastic's contract (torch/distributed/run.py): when a worker dies, the agent stops
all of them and, with --max-restarts N, starts them again with the same arguments and
TORCHELASTIC_RESTART_COUNT raised by one; the script must find and load its last checkpoint itself.
`restart_count()` and `run_id()` give the pipeline what it needs for that; `broadcast` and `gather`
move small Python objects (a decision, RNG states) between the ranks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConvlabError
from .callbacks import Callback


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def restart_count() -> int:
    """How often torchelastic has restarted this job's workers (0: the first attempt, or no torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def max_restarts() -> int:
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))


def run_id() -> str | None:
    """The job's id, the same on every node and across restarts: --rdzv-id, or a fresh uuid with --standalone.

    None when there is none to rely on (no torchrun, or --rdzv-id left at its default "none").
    """
    value = os.environ.get("TORCHELASTIC_RUN_ID")
    return None if not value or value == "none" else value


def setup(device: torch.device, timeout_s: float = 300) -> tuple[Distributed, torch.device]:
    """Join the process group when started by torchrun; returns (ranks, this process's device).

    Without torchrun (WORLD_SIZE unset or 1) nothing happens: a single process, rank 0. `timeout_s`
    bounds every wait for the other ranks (the default of torch is 30 minutes on a dead peer).
    """
    if not launched_by_torchrun():
        return Distributed(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConvlabError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; "
                               f"pass torchrun --nproc_per_node at most the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ConvlabError(f"distributed training runs on cuda or cpu, not {device.type}; pass --device cpu "
                           "or --device cuda")
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
        # The store outlives a torchelastic restart, and with it the addresses the dead workers published:
        # keys of each attempt get their own prefix, or the new ranks would try to connect to the old ones.
        store = dist.PrefixStore(f"convlab/attempt-{restart_count()}", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return Distributed(rank, world, local_rank), device


def wrap_model(model: nn.Module, ranks: Distributed, device: torch.device, find_unused: bool = False) -> nn.Module:
    """DistributedDataParallel around the model (same parameters) when there are several ranks.

    find_unused: some parameters get no gradient in some steps (a fine-tune's frozen groups, unfrozen stage by
    stage): DDP then looks for them after each backward pass instead of waiting for them forever.
    """
    if not ranks.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused)


def broadcast(value: Any, ranks: Distributed) -> Any:
    """Rank 0's `value` on every rank (pickled in transit between this job's own processes, never stored)."""
    if not ranks.enabled:
        return value
    holder = [value if ranks.is_main else None]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather(value: Any, ranks: Distributed) -> list | None:
    """Every rank's `value`, in rank order, on rank 0 (None on the others)."""
    if not ranks.enabled:
        return [value]
    values = [None] * ranks.world_size if ranks.is_main else None
    dist.gather_object(value, values, dst=0)
    return values


def barrier(ranks: Distributed) -> None:
    if ranks.enabled:
        dist.barrier()


def teardown(ranks: Distributed) -> None:
    if ranks.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class AllReduceMetrics(Callback):
    """Averages the epoch's training loss and accuracy over the ranks (shards are the same size).

    It must come first among the callbacks so loggers, history and early stopping see global values.
    """

    KEYS = ("train_loss", "train_accuracy")

    def __init__(self, device: torch.device):
        self.device = device

    def on_epoch_end(self, state, logs):
        keys = [k for k in self.KEYS if k in logs]  # a detector logs no training accuracy
        values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
        for key, value in zip(keys, values.tolist()):
            logs[key] = value
        logs["images_per_second"] = logs["images_per_second"] * dist.get_world_size()
