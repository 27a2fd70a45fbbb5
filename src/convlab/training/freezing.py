"""A fine-tune's freeze plan: its parameter groups, stages and per-group learning rates, as optimizer groups and
a callback that unfreezes each stage's groups at the epoch it begins."""
from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from torch import nn

from ..config import Config
from ..models.freeze import (HEAD, Freezer, ParamGroup, Stage, group_learning_rates, parameter_groups,
                             parse_freeze, plan_stages)
from ..models.registry import count_parameters
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
                              f"{', '.join(self.freezer.trainable_now())}")
            self.current = index
        state.extra["freeze"] = self.freezer.state(self.strategy, index, len(self.stages))

    def on_train_end(self, state):
        self.freezer.release()
        for param in state.model.parameters():  # the saved model is a plain model again
            param.requires_grad_(True)


@dataclass
class FreezePlan:
    """conf.finetune's strategy and --freeze applied to one model: what trains when, at which rate."""

    model: nn.Module
    groups: list[ParamGroup]
    frozen: set[str]
    stages: list[Stage]
    rates: dict[str, float]
    freezer: Freezer
    strategy: str

    @classmethod
    def of(cls, model: nn.Module, conf: Config) -> "FreezePlan":
        groups = parameter_groups(model)
        frozen = parse_freeze(conf.finetune.freeze, groups)
        stages = plan_stages(conf.finetune.strategy, groups, conf.train.epochs, conf.finetune.head_epochs)
        rates = group_learning_rates(conf.finetune.strategy, groups, conf.optim.lr, conf.finetune.backbone_lr_mult)
        freezer = Freezer(model, groups, frozen, conf.finetune.train_bn)
        return cls(model, groups, frozen, stages, rates, freezer, conf.finetune.strategy)

    def apply_first_stage(self) -> None:
        self.freezer.apply(self.stages[0].trainable)

    def optimizer_groups(self) -> list[dict]:
        return optimizer_groups(self.model, self.groups, self.rates)

    def callback(self, announce=None) -> FreezeSchedule:
        return FreezeSchedule(self.freezer, self.stages, self.strategy, announce)



def optimizer_groups(model: nn.Module, groups: list[ParamGroup], rates: dict[str, float]) -> list[dict]:
    """One optimizer group per parameter group at its own rate, the head first (its rate is the one logged).

    Every parameter is in the optimizer from the start; frozen ones have no gradient, so it skips them.
    """
    params = dict(model.named_parameters())
    ordered = [g for g in groups if g.name == HEAD] + [g for g in groups if g.name != HEAD]
    return [{"params": [params[name] for name in g.params], "lr": rates[g.name], "name": g.name} for g in ordered]


def print_plan(console: Console, plan: FreezePlan, conf: Config) -> None:
    """Before training: parameters (total, trainable now), each group's state and learning rate, the stages.

    A stage line names only the groups that really train in it: a group --freeze holds whole is left out,
    so the line agrees with the table under it.
    """
    model, groups, stages, frozen = plan.model, plan.groups, plan.stages, plan.frozen
    sizes = dict((name, p.numel()) for name, p in model.named_parameters())
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    console.print(f"fine-tune {conf.model.name} from {conf.finetune.source}: strategy {conf.finetune.strategy}, "
                  f"head rebuilt for the new classes; {total:,} parameters, {trainable:,} trainable in stage 1",
                  markup=False)
    held_whole = {g.name for g in groups if g.params and all(p in frozen for p in g.params)}
    for i, stage in enumerate(stages, start=1):
        last = stages[i].first_epoch - 1 if i < len(stages) else conf.train.epochs
        span = f"epoch {stage.first_epoch}" + (f"-{last}" if last > stage.first_epoch else "")
        live = [name for name in stage.trainable if name not in held_whole]
        console.print(f"  stage {i}/{len(stages)} ({span}): trains {', '.join(live) or 'nothing'}", markup=False)
    width = max(len(g.name) for g in groups)
    for group in groups:
        count = sum(sizes[p] for p in group.params)
        held = sum(1 for p in group.params if p in frozen)
        starts = next((s.first_epoch for s in stages if group.name in s.trainable), None)
        if held == len(group.params) or starts is None:
            when = "frozen" + (" (--freeze)" if held else "")
        else:
            when = "trains" if starts == 1 else f"frozen until epoch {starts}"
            when += f" ({held} tensors held by --freeze)" if held else ""
        modules = ", ".join(group.modules[:3]) + (", ..." if len(group.modules) > 3 else "")
        rate = f"{plan.rates[group.name]:.2e}" if when.startswith(("trains", "frozen until")) else "-"
        console.print(f"  {group.name:<{width}}  {count:>11,} params  lr {rate:<8}  {when:<24} {modules}",
                      markup=False)
    if plan.freezer.frozen_bn():
        note = "update their statistics (--train-bn)" if conf.finetune.train_bn else "run in eval mode"
        console.print(f"  frozen BatchNorm layers {note}: {len(plan.freezer.frozen_bn())} now", markup=False)
