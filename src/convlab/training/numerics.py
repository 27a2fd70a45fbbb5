"""Numerical faults: stop at the first non-finite training loss, naming where it happened."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConvlabError
from .callbacks import Callback


class NonFiniteLoss(ConvlabError):
    """The training loss became NaN or infinite."""


class NonFiniteLossGuard(Callback):
    """Raises NonFiniteLoss at the first batch whose loss is NaN or Inf, before anything is saved.

    The running loss sum turns non-finite at the first bad batch and stays so. On a GPU the check
    stays on the device (the first bad batch number is kept in a tensor) and is read every
    `check_every` batches and at the end of each epoch, so there is no host sync per step; on the CPU
    reading it costs nothing and it is read every batch.
    """

    def __init__(self, lr: float, checkpoint_dir: Path | None = None, check_every: int | None = None):
        self.lr = lr
        self.checkpoint_dir = checkpoint_dir
        self.check_every = check_every
        self.first_bad: torch.Tensor | None = None

    def on_epoch_begin(self, state):
        self.first_bad = None

    def on_batch_end(self, state, logs):
        loss_sum = logs["loss_sum"]
        every = self.check_every or (1 if loss_sum.device.type == "cpu" else 50)
        bad = ~torch.isfinite(loss_sum)
        if self.first_bad is None:
            self.first_bad = torch.zeros((), dtype=torch.long, device=loss_sum.device)
        self.first_bad = torch.where((self.first_bad == 0) & bad, logs["batch"], self.first_bad)
        if logs["batch"] % every == 0 or logs["batch"] >= state.steps_per_epoch:
            self._check(state)

    def on_epoch_end(self, state, logs):
        self._check(state)

    def _check(self, state) -> None:
        if self.first_bad is None:
            return
        batch = int(self.first_bad)
        if batch == 0:
            return
        step = (state.epoch - 1) * state.steps_per_epoch + batch
        kept = ""
        if self.checkpoint_dir is not None and state.epoch > 1:
            kept = f" The last good checkpoint (end of epoch {state.epoch - 1}) is kept in {self.checkpoint_dir}."
        raise NonFiniteLoss(f"training stopped: the loss became NaN or infinite at epoch {state.epoch}, step {step} "
                            f"(batch {batch} of {state.steps_per_epoch}).{kept} The learning rate {self.lr:g} is "
                            f"probably too high: train again with a lower one, e.g. --lr {self.lr / 10:g}")
