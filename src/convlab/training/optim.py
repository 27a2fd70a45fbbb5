"""Optimizers and learning-rate schedules, each registered under the name its flag takes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..config import OptimConfig

OPTIMIZERS: dict[str, Callable[[list, OptimConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                                             nesterov=c.momentum > 0),
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
}


def build_optimizer(model: nn.Module, config: OptimConfig,
                    param_groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """All trainable parameters at config.lr, or the given groups ({"params", "lr", ...}) at their own rates."""
    params = param_groups if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
    return OPTIMIZERS[config.optimizer](params, config)


@dataclass
class Schedule:
    """A torch LR scheduler and whether it steps after every batch or after every epoch."""

    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    per_batch: bool

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()


def _step(opt, config, epochs, steps):
    # Divide the rate by 10 at 1/2 and 3/4 of training: the classic staircase.
    milestones = sorted({max(1, epochs // 2), max(1, (3 * epochs) // 4)})
    return Schedule(torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1), per_batch=False)


def _cosine(opt, config, epochs, steps):
    return Schedule(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps), per_batch=True)


ONECYCLE_PCT_START = 0.25


def _onecycle(opt, config, epochs, steps):
    total = epochs * steps
    # OneCycleLR puts the peak at step pct_start * total - 1 and divides by that step number (and by the
    # steps after it), so a run of 4 steps with 0.25 ends in ZeroDivisionError, and runs of 1-3 steps never
    # reach the peak (their one step can be at peak / 250000). Short runs warm up for one step instead:
    # the peak at step 1 needs pct_start * total >= 2, and an anneal after it needs total >= 3.
    if total < 3:
        # No room for warm-up, peak and anneal: every step at the peak rate, which is what --lr promises.
        return Schedule(None, per_batch=False)
    pct_start = max(ONECYCLE_PCT_START, 2 / total)  # unchanged from 8 steps on
    return Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                        epochs=epochs, steps_per_epoch=steps, pct_start=pct_start),
                    per_batch=True)


POLY_POWER = 0.9  # torchvision's segmentation reference (and DeepLab's): lr x (1 - step / total) ** 0.9


def _poly(opt, config, epochs, steps):
    return Schedule(torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=epochs * steps, power=POLY_POWER),
                    per_batch=True)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "none": lambda opt, config, epochs, steps: Schedule(None, per_batch=False),
    "step": _step,
    "cosine": _cosine,
    "onecycle": _onecycle,
    "poly": _poly,
}


def build_schedule(optimizer: torch.optim.Optimizer, config: OptimConfig, epochs: int,
                   steps_per_epoch: int) -> Schedule:
    """The schedule for a run of `epochs` x `steps_per_epoch` optimizer steps, of any length from 1 step."""
    # An empty loader (0 steps) never steps a per-batch schedule, but torch's refuse to be built for it.
    return SCHEDULES[config.schedule](optimizer, config, max(1, epochs), max(1, steps_per_epoch))
