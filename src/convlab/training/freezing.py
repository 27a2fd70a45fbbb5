"""The fine-tuning stages as a callback: at the epoch a stage begins, it unfreezes that stage's groups."""
from __future__ import annotations

from ..models.freeze import Freezer, Stage
from .callbacks import Callback


class FreezeSchedule(Callback):
    """Applies the stage of each epoch (requires_grad, frozen BatchNorm in eval mode) and records it.

    The record, a small JSON-able dict in state.extra["freeze"], is what a checkpoint keeps; a resumed
    run re-applies it with models.freeze.apply_freeze_state. The optimizer holds every parameter from
    the start, each group at its own learning rate, so a stage only changes what has gradients.
    """

    def __init__(self, freezer: Freezer, stages: list[Stage], strategy: str, announce=None):
        self.freezer = freezer
        self.stages = stages
        self.strategy = strategy
        self.announce = announce  # called with a line when a later stage begins
        self.current = 0

    def stage_at(self, epoch: int) -> int:
        """1-based index of the stage that epoch `epoch` trains in."""
        return max(i for i, stage in enumerate(self.stages, start=1) if stage.first_epoch <= epoch)

    def on_epoch_begin(self, state):
        recorded = state.extra.get("freeze")
        if not self.current and recorded:  # resumed from a checkpoint: first its own recorded state
            self.freezer.apply(recorded["trainable"])
            self.current = recorded["stage"] if self.stage_at(state.epoch) == recorded["stage"] else 0
        index = self.stage_at(state.epoch)
        if index != self.current:
            self.freezer.apply(self.stages[index - 1].trainable)
            if self.current and self.announce:
                self.announce(f"epoch {state.epoch}: stage {index}/{len(self.stages)} trains "
                              f"{', '.join(self.freezer.trainable)}")
            self.current = index
        state.extra["freeze"] = self.freezer.state(self.strategy, index, len(self.stages))

    def on_train_end(self, state):
        self.freezer.release()
