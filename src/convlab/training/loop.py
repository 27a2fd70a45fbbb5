"""The training loop: epochs of batches, validation after each, callbacks around it all."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.inference import evaluate_loss_accuracy
from .callbacks import Callback, CallbackList
from .optim import Schedule
from .performance import Precision


@dataclass
class LoopState:
    """What callbacks can see (and `stop` is what they can change)."""

    model: nn.Module  # what runs the batches: the model, or its DistributedDataParallel / torch.compile wrapper
    optimizer: torch.optim.Optimizer
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    stop: bool = False
    stopped_early: bool = False
    best_epoch: int = 0
    extra: dict = field(default_factory=dict)
    resume_batch: int = 0  # set by a resumed checkpoint: batches of the next epoch already done
    resume_partial: dict | None = None  # their running loss_sum, correct and seen

    @property
    def plain_model(self) -> nn.Module:
        """The model inside the wrappers: its parameter and state-dict names are the run's saved ones
        ("features.0.weight", never "_orig_mod.features.0.weight" or "module.features.0.weight")."""
        return bare(self.model)


def bare(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel and torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def fit(model: nn.Module, train_loader, val_loader, optimizer: torch.optim.Optimizer, schedule: Schedule,
        loss_fn: nn.Module, epochs: int, callbacks: list[Callback], precision: Precision | None = None) -> LoopState:
    state = LoopState(model, optimizer, epochs, len(train_loader))
    precision = precision or Precision("cpu")
    hooks = CallbackList(callbacks)
    hooks.on_train_begin(state)
    for epoch in range(state.epoch + 1, epochs + 1):  # state.epoch > 0 when a checkpoint was restored
        state.epoch = epoch
        hooks.on_epoch_begin(state)
        started = time.perf_counter()
        logs = train_one_epoch(state, train_loader, schedule, loss_fn, hooks, precision)
        logs["lr"] = optimizer.param_groups[0]["lr"]
        schedule.after_epoch()
        logs["seconds"] = time.perf_counter() - started
        logs["images_per_second"] = train_loader.num_samples / max(logs["seconds"], 1e-9)
        if val_loader is not None:
            val = evaluate_loss_accuracy(model, val_loader, loss_fn)
            logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
        hooks.on_epoch_end(state, logs)
        if state.stop:
            break
    hooks.on_train_end(state)
    return state


def train_one_epoch(state: LoopState, loader, schedule: Schedule, loss_fn: nn.Module, hooks: Callback,
                    precision: Precision | None = None) -> dict:
    """One pass over the training batches. Running sums stay tensors: no host sync per step."""
    model, optimizer = state.model, state.optimizer
    precision = precision or Precision("cpu")
    model.train()
    loss_sum = torch.zeros((), device=loader.device)
    correct = torch.zeros((), dtype=torch.long, device=loader.device)
    seen = 0
    skip, state.resume_batch = state.resume_batch, 0
    if skip:  # resumed inside this epoch: same data order, the done batches are drawn but not trained
        loss_sum += state.resume_partial["loss_sum"].to(loss_sum.device)
        correct += state.resume_partial["correct"].to(correct.device)
        seen = state.resume_partial["seen"]
    for batch, (images, labels) in enumerate(loader, start=1):
        if batch <= skip:
            continue
        with precision.autocast():
            logits = model(images)
            loss = loss_fn(logits, labels)
        precision.backward_step(loss, optimizer)
        schedule.after_batch()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += len(labels)
        hooks.on_batch_end(state, {"batch": batch, "seen": seen, "loss_sum": loss_sum, "correct": correct})
    return {"train_loss": float(loss_sum) / max(seen, 1), "train_accuracy": float(correct) / max(seen, 1)}
