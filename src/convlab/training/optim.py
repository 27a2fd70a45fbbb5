"""Optimizers and learning-rate schedules (each registered under the name its flag takes), their warm-up, and how
batches become optimizer steps (accumulation, clipping)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..config import OptimConfig
from ..errors import ConvlabError

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


@dataclass(frozen=True)
class OptimizerSteps:
    """How training batches become optimizer steps: the gradients of `grad_accum` batches summed into one step
    (an effective batch K times larger, for memory that holds one), their global L2 norm clipped to `clip_grad`
    first (0: off)."""

    grad_accum: int = 1
    clip_grad: float = 0.0

    @classmethod
    def of(cls, config: OptimConfig) -> "OptimizerSteps":
        return cls(config.grad_accum, config.clip_grad)

    def ends_group(self, batch: int, batches: int) -> bool:
        """Whether `batch` (from 1) of an epoch of `batches` closes its group, so that an optimizer step follows:
        every K-th batch, and the last one, which steps on a partial group."""
        return batch % self.grad_accum == 0 or batch == batches


@dataclass
class Schedule:
    """A torch LR scheduler and whether it steps after every optimizer step (`after_batch`: every K batches with
    --grad-accum K) or after every epoch."""

    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    per_batch: bool

    def after_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()


def staircase(length: int) -> list[int]:
    """Where the step schedule divides the rate by 10: at 1/2 and 3/4 of `length` (epochs or steps)."""
    return sorted({max(1, length // 2), max(1, (3 * length) // 4)})


def _none(opt, config, epochs, steps, warm):
    return after_warmup(opt, warm, None)


def _step(opt, config, epochs, steps, warm):
    if not warm:  # the classic staircase, stepped after each epoch
        return Schedule(torch.optim.lr_scheduler.MultiStepLR(opt, milestones=staircase(epochs), gamma=0.1),
                        per_batch=False)
    # After a warm-up the staircase runs over the remaining optimizer steps, so it is counted in steps.
    rest = epochs * steps - warm
    return after_warmup(opt, warm, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=staircase(rest), gamma=0.1))


def _cosine(opt, config, epochs, steps, warm):
    return after_warmup(opt, warm, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps - warm))


ONECYCLE_PCT_START = 0.25


def _onecycle(opt, config, epochs, steps, warm):
    total = epochs * steps
    # OneCycleLR puts the peak at step pct_start * total - 1 and divides by that step number (and by the
    # steps after it), so a run of 4 steps with 0.25 ends in ZeroDivisionError, and runs of 1-3 steps never
    # reach the peak (their one step can be at peak / 250000). Short runs warm up for one step instead:
    # the peak at step 1 needs pct_start * total >= 2, and an anneal after it needs total >= 3.
    if total < 3:
        # No room for warm-up, peak and anneal: every step at the peak rate, which is what --lr promises.
        return Schedule(None, per_batch=False)
    if warm:
        # One-cycle has a warm-up of its own: --warmup-epochs sets its length instead of adding a second ramp
        # before it. Step warm + 1 runs at the peak, as after the linear ramp of the other schedules.
        pct_start = min(warm + 1, total - 1) / total
    else:
        pct_start = ONECYCLE_PCT_START
    pct_start = max(pct_start, 2 / total)  # unchanged from 8 steps on
    return Schedule(torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                        epochs=epochs, steps_per_epoch=steps, pct_start=pct_start),
                    per_batch=True)


POLY_POWER = 0.9  # torchvision's segmentation reference (and DeepLab's): lr x (1 - step / total) ** 0.9


def _poly(opt, config, epochs, steps, warm):
    return after_warmup(opt, warm, torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=epochs * steps - warm,
                                                                         power=POLY_POWER))


def after_warmup(opt: torch.optim.Optimizer, warm: int,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> Schedule:
    """`scheduler` (stepped per optimizer step; None: a constant rate) after a linear ramp over `warm` steps.

    Step k of the ramp (1 <= k <= warm) runs at k / (warm + 1) of each group's rate, and step warm + 1 at the
    full rate, where the scheduler starts as if the run began there. LinearLR scales every parameter group by
    the same factor, so a fine-tune's groups keep their ratio.
    """
    if not warm:
        return Schedule(scheduler, per_batch=scheduler is not None)
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (warm + 1), end_factor=1.0, total_iters=warm)
    if scheduler is None:
        return Schedule(ramp, per_batch=True)  # LinearLR keeps the full rate after its last step
    return Schedule(torch.optim.lr_scheduler.SequentialLR(opt, [ramp, scheduler], milestones=[warm]),
                    per_batch=True)


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "none": _none,
    "step": _step,
    "cosine": _cosine,
    "onecycle": _onecycle,
    "poly": _poly,
}


def steps_per_epoch(batches: int, grad_accum: int) -> int:
    """Optimizer steps in an epoch of `batches` batches with --grad-accum K: a partial group at the end steps too."""
    return -(-batches // grad_accum)


def warmup_steps(config: OptimConfig, epochs: int, steps_per_epoch: int) -> int:
    """The optimizer steps of --warmup-epochs (fractions of an epoch allowed), at least 1 when asked for and
    always leaving the schedule at least one step; a warm-up as long as the run is refused by name."""
    check_warmup(config, epochs)
    if not config.warmup_epochs:
        return 0
    return min(epochs * steps_per_epoch - 1, max(1, round(config.warmup_epochs * steps_per_epoch)))


def check_warmup(config: OptimConfig, epochs: int) -> None:
    if config.warmup_epochs >= epochs:
        raise ConvlabError(f"--warmup-epochs {config.warmup_epochs:g} must be fewer than --epochs {epochs}: the "
                           f"schedule needs steps after the warm-up; pass a shorter warm-up or more epochs")


def build_schedule(optimizer: torch.optim.Optimizer, config: OptimConfig, epochs: int,
                   batches_per_epoch: int) -> Schedule:
    """The schedule for a run of `epochs` x `batches_per_epoch` batches, of any length from 1 step.

    It steps once per optimizer step: with --grad-accum K an epoch has ceil(batches / K) of them. A warm-up
    (--warmup-epochs) ramps the rate linearly over its first steps; the schedule then runs over the rest.
    """
    # An empty loader (0 steps) never steps a per-batch schedule, but torch's refuse to be built for it.
    epochs = max(1, epochs)
    steps = steps_per_epoch(max(1, batches_per_epoch), config.grad_accum)
    return SCHEDULES[config.schedule](optimizer, config, epochs, steps, warmup_steps(config, epochs, steps))
