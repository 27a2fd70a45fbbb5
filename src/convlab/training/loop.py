"""The training loop: epochs of batches, validation after each, callbacks around it all."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.inference import evaluate_loss_accuracy
from .callbacks import Callback, CallbackList
from .optim import OptimizerSteps, Schedule
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
    averaged: nn.Module | None = None  # set by --ema (training/ema.py): the averaged weights, validated and kept

    @property
    def plain_model(self) -> nn.Module:
        """The model inside the wrappers: its parameter and state-dict names are the run's saved ones
        ("features.0.weight", never "_orig_mod.features.0.weight" or "module.features.0.weight")."""
        return bare(self.model)

    @property
    def validated(self) -> nn.Module:
        """What validation runs: the averaged weights under --ema, else the model as it trains."""
        return self.model if self.averaged is None else self.averaged

    @property
    def kept_model(self) -> nn.Module:
        """Whose weights BestModel and the best checkpoint keep: the validated ones, with the run's plain names."""
        return self.plain_model if self.averaged is None else self.averaged


def bare(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel and torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def fit(model: nn.Module, train_loader, val_loader, optimizer: torch.optim.Optimizer, schedule: Schedule,
        loss_fn: nn.Module | None, epochs: int, callbacks: list[Callback], precision: Precision | None = None,
        step=None, validate=None, optimizer_steps: OptimizerSteps | None = None) -> LoopState:
    """Train for `epochs`. A task (tasks/) gives its `step` and `validate` (default: a classifier's): the loop
    is the same for every task, and so are `optimizer_steps` (gradient accumulation and clipping)."""
    step, validate = step or classify_step, validate or classify_validate
    state = LoopState(model, optimizer, epochs, len(train_loader))
    precision = precision or Precision("cpu")
    hooks = CallbackList(callbacks)
    hooks.on_train_begin(state)
    for epoch in range(state.epoch + 1, epochs + 1):  # state.epoch > 0 when a checkpoint was restored
        state.epoch = epoch
        hooks.on_epoch_begin(state)
        started = time.perf_counter()
        logs = train_one_epoch(state, train_loader, schedule, loss_fn, hooks, precision, step, optimizer_steps)
        logs["lr"] = optimizer.param_groups[0]["lr"]
        schedule.after_epoch()
        logs["seconds"] = time.perf_counter() - started
        logs["images_per_second"] = train_loader.num_samples / max(logs["seconds"], 1e-9)
        if val_loader is not None:
            hooks.on_validation_begin(state)
            logs.update(validate(state.validated, val_loader, loss_fn))
        hooks.on_epoch_end(state, logs)
        if state.stop:
            break
    hooks.on_train_end(state)
    return state


def train_one_epoch(state: LoopState, loader, schedule: Schedule, loss_fn: nn.Module | None, hooks: Callback,
                    precision: Precision | None = None, step=None,
                    optimizer_steps: OptimizerSteps | None = None) -> dict:
    """One pass over the training batches. Running sums stay tensors: no host sync per step.

    `step(model, batch, loss_fn) -> (loss, count, correct)` is the task's: correct is None where the task
    has no training accuracy (a detector's), and then none is logged. `optimizer_steps` says how batches become
    optimizer steps (--grad-accum, --clip-grad); the hooks' logs say whether one followed the batch."""
    model, optimizer = state.model, state.optimizer
    precision, steps = precision or Precision("cpu"), optimizer_steps or OptimizerSteps()
    model.train()
    loss_sum = torch.zeros((), device=loader.device)
    correct = torch.zeros((), dtype=torch.long, device=loader.device)
    seen = 0
    skip, state.resume_batch = state.resume_batch, 0
    if skip:  # resumed inside this epoch: same data order, the done batches are drawn but not trained
        loss_sum += state.resume_partial["loss_sum"].to(loss_sum.device)
        correct += state.resume_partial["correct"].to(correct.device)
        seen = state.resume_partial["seen"]
    step = step or classify_step
    accuracy = True
    batches, group_images = len(loader), 0  # images in the accumulation group so far
    for batch, inputs in enumerate(loader, start=1):
        if batch <= skip:
            continue
        stepping = steps.ends_group(batch, batches)
        with contextlib.nullcontext() if stepping else gradient_sync_off(model):  # DDP syncs at the step only
            with precision.autocast():
                loss, count, hits = step(model, inputs, loss_fn)
            if not group_images:
                optimizer.zero_grad(set_to_none=True)
            # Accumulating, each batch adds its per-image sum and the step divides by the images: a mean over
            # the group even when its last batch is short. One batch per step keeps the plain mean loss.
            precision.backward(loss * count if steps.grad_accum > 1 else loss)
        group_images += count
        if stepping:
            precision.step(optimizer, steps.clip_grad, divide_by=group_images if steps.grad_accum > 1 else 1)
            schedule.after_batch()
            group_images = 0
        loss_sum += loss.detach() * count
        if hits is not None:
            correct += hits
        accuracy = hits is not None
        seen += count
        hooks.on_batch_end(state, {"batch": batch, "seen": seen, "loss_sum": loss_sum, "correct": correct,
                                   "accuracy": accuracy, "optimizer_step": stepping})
    logs = {"train_loss": float(loss_sum) / max(seen, 1)}
    if accuracy:
        logs["train_accuracy"] = float(correct) / max(seen, 1)
    return logs


def gradient_sync_off(model: nn.Module):
    """DistributedDataParallel's no_sync() for a batch whose gradients only accumulate (the all-reduce waits for
    the group's last batch); a null context for a model in one process. Looks inside torch.compile."""
    while not hasattr(model, "no_sync"):
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            return contextlib.nullcontext()
        model = inner
    return model.no_sync()


def classify_step(model: nn.Module, batch, loss_fn: nn.Module):
    """A classifier's training step: logits, the loss, and how many of the batch it got right.

    The targets are class indices (B,), or soft targets (B, classes) from --mixup/--cutmix: the loss takes them
    as they are, and "right" means the mixed target's larger share."""
    images, targets = batch
    logits = model(images)
    loss = loss_fn(logits, targets)
    labels = targets.argmax(1) if targets.ndim == 2 else targets
    return loss, len(labels), (logits.detach().argmax(1) == labels).sum()


def classify_validate(model: nn.Module, loader, loss_fn: nn.Module) -> dict:
    """A classifier's validation logs: val_loss and val_accuracy."""
    val = evaluate_loss_accuracy(model, loader, loss_fn)
    return {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}
