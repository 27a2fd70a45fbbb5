"""--ema DECAY: an exponential moving average of the weights, updated every optimizer step, validated and kept.

The average is torch.optim.swa_utils' AveragedModel with get_ema_multi_avg_fn(decay): after the first optimizer
step it holds that step's weights, and after each later step `decay * average + (1 - decay) * weights`.
`use_buffers=True` averages BatchNorm's running statistics along with the parameters (as timm's ModelEmaV2 does
with the whole state dict), so the averaged weights are validated with statistics that were gathered along the
same path; the alternative (use_buffers=False) copies the raw model's statistics, which belong to other weights.
An integer buffer (BatchNorm's num_batches_tracked) is a count, not a quantity: it is copied, never averaged.

The loop validates `LoopState.validated` and BestModel, the best checkpoint and the run keep
`LoopState.kept_model`: both are the average once this callback has begun (see training/loop.py).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .callbacks import Callback
from .distributed import Distributed


class WeightEMA(Callback):
    """Keeps the exponential moving average of `model`'s weights (the bare model, inside DDP and torch.compile).

    One update per optimizer step: a step post-hook on the optimizer notes that it stepped, and the update runs
    at that batch's end, after the callbacks placed before this one have adjusted the weights (prune's masks);
    a batch whose step was skipped (gradient accumulation between steps, a GradScaler step skipped on inf) does
    not update it. `validated` is the module validation runs: the averaged model, or a fine-tune's switch that
    feeds it cached features. At the end of training the model takes the averaged weights (BestModel, placed
    after this, then puts back the best epoch's, which are averaged weights too).

    Under torchrun every rank keeps the average (the parameters are the same on all ranks), but each rank's
    BatchNorm statistics come from its own shard until DDP's next forward copies rank 0's: before validation the
    average's buffers are taken from rank 0, so every rank validates the same weights and early stopping stops
    them together.
    """

    needs_torch_engine = True

    def __init__(self, model: nn.Module, decay: float, ranks: Distributed | None = None):
        self.source = model
        self.decay = decay
        self.ranks = ranks or Distributed()
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.requires_grad_(False)
        self.validated: nn.Module = self.averaged.module
        self._stepped = False
        self._hook = None
        self._counts = [(mine, theirs) for mine, theirs in zip(self.model.buffers(), model.buffers())
                        if not (mine.is_floating_point() or mine.is_complex())]

    @property
    def model(self) -> nn.Module:
        """The averaged copy: the same architecture and state-dict names as the trained model."""
        return self.averaged.module

    @torch.no_grad()
    def update(self) -> None:
        """Fold the trained model's current weights into the average."""
        self.averaged.update_parameters(self.source)
        for mine, theirs in self._counts:
            mine.copy_(theirs)

    def _note_step(self, optimizer, args, kwargs) -> None:
        self._stepped = True

    def on_train_begin(self, state):
        state.averaged = self.validated
        self._hook = state.optimizer.register_step_post_hook(self._note_step)

    def on_batch_end(self, state, logs):
        self._catch_up()

    def on_validation_begin(self, state):
        self._catch_up()
        if self.ranks.enabled:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)

    def on_epoch_end(self, state, logs):
        self._catch_up()

    def _catch_up(self) -> None:
        """The update of an optimizer step not yet folded in (one per step, however the loop batches them)."""
        if self._stepped:
            self._stepped = False
            self.update()

    def on_train_end(self, state):
        self._hook.remove()
        self.source.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict:
        return {"decay": self.decay, "averaged": self.averaged.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])


__all__ = ["WeightEMA"]
