"""Checkpoints: the whole training state in one safetensors file, written atomically and restored exactly.

A checkpoint is a single safetensors file: every tensor (weights, optimizer moments, RNG states) is a
named tensor, everything else (epoch, position, schedule, history, RNG state of Python and NumPy,
LoopState.extra) is one JSON document in the file's metadata. Nothing is pickled, so loading a
checkpoint can never run code. Files are written to a temporary name in the same folder, fsynced and
renamed over the old one, so a crash at any moment leaves either the old or the new checkpoint.

Under torchrun the ranks' own states (RNG states, the running sums of an epoch) are gathered to rank 0
and written into the same file: one file, one rename, so a checkpoint can never mix ranks saved at
different steps (one file per rank could). Rank 0 writes while the others wait at a barrier; on resume
rank 0 reads the file and sends it to the others, so ranks on other nodes need no copy of the folder.
"""
from __future__ import annotations

import json
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ConvlabError
from ..files import atomic_write
from ..layout import BEST, CHECKPOINTS, LAST
from . import distributed
from .callbacks import Callback

FORMAT = "convlab-checkpoint/1"
DEFER_MAX_S = 60.0  # an epoch end left unsaved (Checkpointer.defer) is saved anyway this long after the last save
_STATE_KEY = "convlab_state"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the state was saved; the message says how to resume."""


# --- packing nested state into tensors + JSON -----------------------------------------------------

def pack(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """Nested dicts/lists/tuples of tensors, arrays and scalars -> JSON-able data; tensors go to `tensors`.

    Tuples, dicts with non-string keys (optimizer state is keyed by int) and numpy arrays are tagged
    so that `unpack` rebuilds exactly what was packed.
    """
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: pack(v, tensors, f"{path}/{k}") for k, v in obj.items()}
        return {"__items__": [[pack(k, tensors, f"{path}/k{i}"), pack(v, tensors, f"{path}/{i}")]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, tensors, f"{path}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} at {path or '/'} in a checkpoint")


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `pack`."""
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.array(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
    if "__tuple__" in obj:
        return tuple(unpack(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {unpack(k, tensors): unpack(v, tensors) for k, v in obj["__items__"]}
    return {k: unpack(v, tensors) for k, v in obj.items()}


# --- atomic files -----------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    """Write a nested state (tensors anywhere inside) as one safetensors file, atomically."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    document = {"format": FORMAT, "state": pack(state, tensors)}
    metadata = {_STATE_KEY: json.dumps(document, allow_nan=True)}
    atomic_write(Path(path), save(tensors, metadata=metadata))


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by `save_checkpoint`; anything else is a ConvlabError naming the file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ConvlabError(f"checkpoint {path} does not exist; the run has no saved training state to resume")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as err:
        raise ConvlabError(f"checkpoint {path} is not a readable safetensors file ({err}); it is damaged or "
                           "not a convlab checkpoint (pickled .pt files are never loaded)") from None
    try:
        document = json.loads(metadata[_STATE_KEY])
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"format {document.get('format') if isinstance(document, dict) else None!r}")
        state = unpack(document["state"], tensors)
        if not isinstance(state, dict):
            raise ValueError("the state is not a mapping")
        return state
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
        raise ConvlabError(f"checkpoint {path} holds no valid convlab training state ({type(err).__name__}: "
                           f"{err}); it is damaged or from another program") from None


def checkpoint_position(path: Path) -> dict:
    """{'epoch': completed epochs, 'batch': batches of the next epoch done, 'world_size': processes that
    wrote it} from the metadata alone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            state = json.loads((handle.metadata() or {})[_STATE_KEY])["state"]
        return {"epoch": int(state["epoch"]), "batch": int(state["batch"]),
                "world_size": int(state.get("world_size", 1))}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as err:
        raise ConvlabError(f"checkpoint {path} is damaged or not a convlab checkpoint ({type(err).__name__}: "
                           f"{err}); pickled .pt files are never loaded") from None


# --- RNG states -------------------------------------------------------------------------------------

def rng_states(generators: dict[str, torch.Generator]) -> dict:
    """Python, NumPy and torch global RNG states, plus the named torch generators (data order, ...)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "generators": {name: g.get_state() for name, g in generators.items()}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict, generators: dict[str, torch.Generator]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for name, generator in generators.items():
        generator.set_state(states["generators"][name])


# --- the callback -----------------------------------------------------------------------------------

class Checkpointer(Callback):
    """Saves `last` after every epoch (and every `every` batches) and `best` when validation improves;
    restores them on resume. `best` holds the validated weights (the average under --ema); `last` the trained
    ones, and the average with the other callbacks' states (WeightEMA is one of `stateful`).

    `stateful` maps names to the callbacks whose state belongs in a checkpoint (history, best model,
    early stopping): each has state_dict()/load_state_dict(). `generators` are the torch generators
    the data pipeline draws from (shuffling and augmentation). Ctrl-C sets a flag; at the next batch
    boundary the state is saved (with the position inside the epoch) and TrainingInterrupted is raised.
    Under torchrun (`ranks`) every save is a collective: all ranks call it at the same step.
    """

    def __init__(self, folder: Path, schedule, generators: dict[str, torch.Generator],
                 stateful: dict[str, Any] | None = None, resume: bool = False, resume_hint: str = "",
                 ranks: distributed.Distributed | None = None, every: int = 0, resumable: bool = True):
        self.folder = Path(folder)
        self.schedule = schedule
        self.generators = generators
        self.stateful = stateful or {}
        self.resume = resume
        self.resume_hint = resume_hint  # the command that continues the run, or what to do when it cannot
        self.resumable = resumable
        self.ranks = ranks or distributed.Distributed()
        self.every = every
        self.interrupt_requested = False
        self._previous_handler = None
        self._periodic_due = False  # --checkpoint-every fell inside an accumulation group
        self._epoch_start_generators: dict = {}
        self.save_seconds: list[float] = []  # the time of each save after the first, on rank 0
        # Set by a callback whose epochs cost less than a save (a head trained on cached features): True for an
        # epoch whose end may go unsaved; a failure then redoes those epochs (at most DEFER_MAX_S of them).
        self.defer: Callable[[Any], bool] | None = None
        self.deferred = 0  # epoch ends left unsaved
        self._unsaved_best: tuple | None = None  # (epoch, monitor, value, weights) of a best epoch left unsaved
        self._saved_at = time.monotonic()

    # hooks
    def on_train_begin(self, state):
        if self.ranks.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            for stale in self.folder.glob(".*.tmp"):  # left by a process killed while writing
                stale.unlink(missing_ok=True)
        if self.resume:
            record = load_checkpoint(self.folder / LAST) if self.ranks.is_main else None
            self._restore(state, distributed.broadcast(record, self.ranks))
        else:
            self.save(state)  # epoch 0: a run killed during its first epoch can be resumed too
            self.save_seconds.clear()  # the first save also warms up; the report counts the regular ones
        if not self.ranks.enabled:  # under torchrun the ranks would see Ctrl-C at different steps
            self._install_sigint()

    def on_epoch_begin(self, state):
        # The data order of an epoch is drawn at its first batch: keep the generators' state from
        # before it, so a checkpoint taken inside the epoch can replay the same order.
        if not state.resume_batch:
            self._epoch_start_generators = {n: g.get_state() for n, g in self.generators.items()}

    def on_batch_end(self, state, logs):
        self._periodic_due = self._periodic_due or bool(self.every and logs["batch"] % self.every == 0)
        if not logs.get("optimizer_step", True):
            return  # inside a --grad-accum group: its gradients are not saved, so the save waits for its step
        periodic = self._periodic_due and logs["batch"] < state.steps_per_epoch
        self._periodic_due = False
        if self.interrupt_requested or periodic:
            self.save(state, batch=logs["batch"], partial={"loss_sum": logs["loss_sum"], "correct": logs["correct"],
                                                           "seen": logs["seen"]})
        if self.interrupt_requested:
            self._interrupt(state)

    def on_epoch_end(self, state, logs):
        monitor = getattr(self.stateful.get("best"), "monitor", "val_accuracy")  # the task's metric (mAP, ...)
        best = (self.ranks.is_main and logs.get(monitor) is not None
                and getattr(self.stateful.get("best"), "best_epoch", None) == state.epoch)
        weights = {k: v.detach().cpu() for k, v in state.kept_model.state_dict().items()} if best else None
        if self._may_defer(state):
            self.deferred += 1
            if best:  # a copy: the live weights move on before the next save writes it
                self._unsaved_best = (state.epoch, monitor, logs[monitor], {k: v.clone() for k, v in weights.items()})
        else:
            if best or self._unsaved_best:
                self._write_best(*((state.epoch, monitor, logs[monitor], weights) if best else self._unsaved_best))
            self._unsaved_best = None
            self.save(state)
        if self.interrupt_requested:
            self._interrupt(state)

    def _write_best(self, epoch: int, monitor: str, value: float, weights: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        meta = {"epoch": str(epoch), monitor: repr(value)}
        atomic_write(self.folder / BEST, save({k: v.contiguous() for k, v in weights.items()}, metadata=meta))

    def _may_defer(self, state) -> bool:
        """`defer` allows it, and this is neither Ctrl-C, nor the last epoch, nor long after the last save."""
        return (self.defer is not None and not self.interrupt_requested and state.epoch < state.epochs
                and not state.stop and time.monotonic() - self._saved_at < DEFER_MAX_S and self.defer(state))

    def on_train_end(self, state):
        self._uninstall_sigint()

    # saving and restoring
    def save(self, state, batch: int = 0, partial: dict | None = None) -> None:
        """Write `last`: at an epoch boundary (batch 0) or after `batch` batches of epoch state.epoch."""
        started = time.perf_counter()
        if partial is not None:
            partial = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in partial.items()}
        ranks = distributed.gather({"rng": rng_states(self.generators), "partial": partial}, self.ranks)
        if self.ranks.is_main:
            record = {
                "epoch": state.epoch if batch == 0 else state.epoch - 1,  # completed epochs
                "batch": batch,
                "world_size": self.ranks.world_size,
                "ranks": ranks,  # per rank: RNG states and the epoch's running sums
                "model": state.plain_model.state_dict(),  # the same keys with or without DDP and compile
                "optimizer": state.optimizer.state_dict(),
                "scheduler": self.schedule.scheduler.state_dict() if self.schedule.scheduler is not None else None,
                "epoch_start_generators": self._epoch_start_generators if batch else None,
                "callbacks": {name: cb.state_dict() for name, cb in self.stateful.items()},
                "extra": state.extra,
                "best_epoch": state.best_epoch,
                "threads": torch.get_num_threads(),
            }
            save_checkpoint(self.folder / LAST, record)
        distributed.barrier(self.ranks)  # no rank runs ahead of a checkpoint that may still fail to write
        self.save_seconds.append(time.perf_counter() - started)
        self._saved_at = time.monotonic()

    def _restore(self, state, record: dict) -> None:
        written_by = int(record.get("world_size", 1))
        if written_by != self.ranks.world_size and self.schedule.scheduler is not None and self.schedule.per_batch:
            raise ConvlabError(f"checkpoint {self.folder / LAST} was written by {written_by} processes and the run's "
                               f"learning-rate schedule is planned step by step over their shards; resume it with "
                               f"{written_by} processes (torchrun --nproc_per_node), or train again")
        try:
            state.plain_model.load_state_dict(_without_wrappers(record["model"]))
            state.optimizer.load_state_dict(record["optimizer"])
            if self.schedule.scheduler is not None and record["scheduler"] is not None:
                self.schedule.scheduler.load_state_dict(record["scheduler"])
            for name, cb in self.stateful.items():
                cb.load_state_dict(record["callbacks"][name])
            # Checkpoints from before per-rank states hold one process's "rng" and "partial".
            saved = record.get("ranks") or [{"rng": record["rng"], "partial": record["partial"]}]
            mine = saved[self.ranks.rank % len(saved)]
            restore_rng_states(mine["rng"], self.generators)
            state.extra.update(record["extra"] or {})
            state.best_epoch = record["best_epoch"]
            state.epoch = record["epoch"]
            if torch.are_deterministic_algorithms_enabled() and record.get("threads"):
                torch.set_num_threads(record["threads"])  # the same reduction order as before the stop
            if record["batch"]:
                # Mid-epoch: replay the epoch's data order from its start, skip the batches done,
                # and carry on with the running sums; the loop checks nothing else.
                for name, generator in self.generators.items():
                    generator.set_state(record["epoch_start_generators"][name])
                state.resume_batch, state.resume_partial = _resume_point(record["batch"], saved, mine,
                                                                         self.ranks.world_size)
                self._epoch_start_generators = record["epoch_start_generators"]
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise ConvlabError(f"checkpoint {self.folder / LAST} does not fit this run "
                               f"({type(err).__name__}: {str(err).splitlines()[0]}); it is damaged or "
                               "belongs to another run") from None

    def cost_line(self) -> str | None:
        """How long the checkpoints of this run took, for the log (None before any regular one)."""
        if not self.save_seconds:
            return None
        seconds = sorted(self.save_seconds)
        size = (self.folder / LAST).stat().st_size if (self.folder / LAST).is_file() else 0
        every = f"every {self.every} steps and " if self.every else ""
        unsaved = f"; {self.deferred} head-only epoch{'s' if self.deferred > 1 else ''} on cached features unsaved" if self.deferred else ""
        return (f"checkpoints: {len(seconds)} saved ({every}at each epoch's end{unsaved}), "
                f"{seconds[len(seconds) // 2] * 1e3:.1f} ms each (median; max {seconds[-1] * 1e3:.1f} ms), "
                f"{size / 1e6:.2f} MB")

    # Ctrl-C
    def _install_sigint(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request(signum, frame):
            self.interrupt_requested = True
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

        self._previous_handler = signal.signal(signal.SIGINT, request)

    def _uninstall_sigint(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None

    def _interrupt(self, state) -> None:
        self._uninstall_sigint()
        if not self.resumable:
            raise TrainingInterrupted(f"stopped during epoch {state.epoch}; {self.resume_hint}")
        raise TrainingInterrupted(f"saved the training state in {self.folder / LAST} during epoch "
                                  f"{state.epoch}; continue with: {self.resume_hint}")


WRAPPERS = ("module.", "_orig_mod.")  # the key prefixes of DistributedDataParallel and torch.compile


def _without_wrappers(weights: dict) -> dict:
    """Keys without wrapper prefixes: checkpoints of compiled runs written before LoopState.plain_model have them."""
    def strip(key: str) -> str:
        while key.startswith(WRAPPERS):
            key = key.split(".", 1)[1]
        return key

    return {strip(k): v for k, v in weights.items()}


def _resume_point(batch: int, saved: list[dict], mine: dict, world_size: int) -> tuple[int, dict]:
    """Batches of the epoch to skip and the running sums to carry on with, for this rank.

    With the world size of the checkpoint: exactly this rank's own. With another world size the shards
    differ, so the same share of the epoch is skipped and the sums of all old ranks are split evenly
    (the continued run is close to, not the same as, the uninterrupted one).
    """
    if len(saved) == world_size:
        return batch, mine["partial"]
    partials = [rank["partial"] for rank in saved]
    total = {"loss_sum": sum(p["loss_sum"] for p in partials), "correct": sum(p["correct"] for p in partials),
             "seen": sum(p["seen"] for p in partials)}
    return (batch * len(saved)) // world_size, {"loss_sum": total["loss_sum"] / world_size,
                                                "correct": total["correct"] // world_size,
                                                "seen": total["seen"] // world_size}


def checkpoint_bytes(model: torch.nn.Module, optimizer_copies: int = 2, averaged: bool = False) -> int:
    """A generous size estimate of `last` + `best` + one temp file, for the free-space check."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    last = weights * (2 + optimizer_copies + averaged)  # weights, best weights, optimizer moments, --ema's average
    return last * 2 + weights + (1 << 20)  # last and its temp copy during the rename, best, metadata


def check_free_space(folder: Path, needed: int) -> None:
    """Report a full disk before training rather than at the first checkpoint."""
    import shutil

    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConvlabError(f"the run folder {folder} has {free / 1e6:,.1f} MB free, but checkpoints of this model "
                           f"need about {needed / 1e6:,.1f} MB; free some space or pass --out on another disk")


__all__ = ["Checkpointer", "TrainingInterrupted", "save_checkpoint", "load_checkpoint", "atomic_write",
           "checkpoint_position",
           "check_free_space", "checkpoint_bytes", "CHECKPOINTS", "LAST", "BEST"]
