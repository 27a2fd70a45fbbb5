"""Freezing by named parameter groups (stem, stages, head) and the fine-tuning strategies built on them.

Every model is split into ordered groups: `stem` (the first layers), `stage1..N` (the body, bottom to
top) and `head` (the classifier layer that is rebuilt for new classes). A family rule, registered by
decorator, knows how a kind of model splits; the first rule that matches a model wins. A strategy,
also registered by decorator, turns the groups into stages: from which epoch which groups train.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..errors import ConvlabError

HEAD = "head"


@dataclass
class ParamGroup:
    name: str  # "stem", "stage1", ..., "head"
    modules: list[str]  # the module names it covers, for people
    params: list[str] = field(default_factory=list)  # parameter names, as in model.named_parameters()


# --- finding the head ---------------------------------------------------------------------------------

def head_name(model: nn.Module) -> str:
    """The module name of the classifier layer: timm's get_classifier(), else the last Linear
    (the last Conv2d for all-convolutional heads such as SqueezeNet's). A head built by models/heads.py
    (an MLP) is the head whole."""
    for name, module in model.named_modules():
        if getattr(module, "is_classifier_head", False):
            return name
    if hasattr(model, "get_classifier"):
        classifier = model.get_classifier()
        for name, module in model.named_modules():
            if module is classifier and isinstance(module, (nn.Linear, nn.Conv2d)):
                return name
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1]
    raise ConvlabError(f"cannot find the classifier layer of {type(model).__name__}: it has no Linear or Conv2d")


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# --- family rules -------------------------------------------------------------------------------------

# A rule gets the model and the head's module name and returns the backbone's groups, bottom first, as
# (group name, module names). Parameters no rule names join the stem.
GroupRule = Callable[[nn.Module, str], list[tuple[str, list[str]]]]
FAMILIES: list[tuple[str, Callable[[nn.Module], bool], GroupRule]] = []


def register_family(name: str, matches: Callable[[nn.Module], bool]):
    """Decorator: register how models that `matches` accepts split into stem and stages."""

    def wrap(rule: GroupRule) -> GroupRule:
        FAMILIES.append((name, matches, rule))
        return rule

    return wrap


def _with_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _stages(names: list[str]) -> list[tuple[str, list[str]]]:
    return [(f"stage{i}", [name]) for i, name in enumerate(names, start=1)]


@register_family("timm", lambda m: hasattr(m, "group_matcher") and hasattr(m, "get_classifier"))
def timm_groups(model: nn.Module, head: str) -> list[tuple[str, list[str]]]:
    """timm models name their own groups (group_matcher): group 0 is the stem, then the blocks."""
    from timm.models import group_parameters

    grouped = group_parameters(model, model.group_matcher(coarse=True))
    groups = []
    for _, params in sorted(grouped.items()):
        params = [p for p in params if not _under(p, head)]
        if params:
            groups.append(params)
    # Module names for people: the parameter names without their last part, deduplicated in order.
    out = []
    for i, params in enumerate(groups):
        modules = list(dict.fromkeys(p.rsplit(".", 1)[0] if "." in p else p for p in params))
        short = list(dict.fromkeys(m.split(".")[0] if len(modules) > 3 else m for m in modules))
        out.append(("stem" if i == 0 else f"stage{i}", short))
    return out


@register_family("resnet", lambda m: hasattr(m, "layer1") and hasattr(m, "fc"))
def resnet_groups(model: nn.Module, head: str) -> list[tuple[str, list[str]]]:
    """torchvision ResNets and resnet8: conv1/bn1 are the stem, each layerN a stage."""
    children = [(name, child) for name, child in model.named_children() if _with_params(child) and name != head]
    stages = [name for name, _ in children if re.fullmatch(r"layer\d+", name)]
    first = [name for name, _ in children].index(stages[0])
    stem = [name for name, _ in children[:first]]
    rest = [name for name, _ in children[first:] if name not in stages]  # e.g. a neck after the last stage
    return [("stem", stem)] + _stages(stages + rest)


@register_family("features-classifier", lambda m: isinstance(getattr(m, "features", None), nn.Sequential))
def features_classifier_groups(model: nn.Module, head: str) -> list[tuple[str, list[str]]]:
    """The presets, VGG, AlexNet, MobileNets, EfficientNets, DenseNets, ConvNeXt...: features.0 is the stem,
    every later block of `features` a stage, then the classifier's hidden layers."""
    units = [f"features.{name}" for name, child in model.features.named_children() if _with_params(child)]
    for name, child in model.named_children():
        if name == "features" or not _with_params(child) or name == head:
            continue
        if _under(head, name):  # the head sits inside, e.g. classifier.3: its other layers are stages
            units += [f"{name}.{sub}" for sub, grandchild in child.named_children()
                      if _with_params(grandchild) and not _under(head, f"{name}.{sub}")]
        else:
            units.append(name)
    return [("stem", units[:1])] + _stages(units[1:])


def generic_groups(model: nn.Module, head: str) -> list[tuple[str, list[str]]]:
    """Any other model: its first child with parameters is the stem, each later one a stage."""
    units = [name for name, child in model.named_children() if _with_params(child) and not _under(head, name)]
    return [("stem", units[:1])] + _stages(units[1:])


def parameter_groups(model: nn.Module) -> list[ParamGroup]:
    """The model's parameters in named groups, bottom first, `head` last. Every parameter is in one group.

    A model with a group_modules() method names its groups itself: [(group, module names)], `head` last (a
    detector's head is several modules: its RPN and box heads)."""
    if hasattr(model, "group_modules"):  # a model that names its own groups, head included (a detector)
        named = model.group_modules()
    else:
        head = head_name(model)
        rule = next((rule for _, matches, rule in FAMILIES if matches(model)), generic_groups)
        named = rule(model, head) + [(HEAD, [head])]
    groups = [ParamGroup(name, modules) for name, modules in named if modules]
    for param_name, _ in model.named_parameters():
        owner = next((g for g in reversed(groups) if any(_under(param_name, m) for m in g.modules)), None)
        if owner is None:  # e.g. a ViT's class token: it sits at the bottom of the network
            owner = groups[0]
            if param_name not in owner.modules:
                owner.modules.append(param_name)
        owner.params.append(param_name)
    return [g for g in groups if g.params]


def family_of(model: nn.Module) -> str:
    return next((name for name, matches, _ in FAMILIES if matches(model)), "generic")


# --- what stays frozen --------------------------------------------------------------------------------

def parse_freeze(spec: str | None, groups: list[ParamGroup]) -> set[str]:
    """--freeze backbone | stages:N | NAME,... -> the parameter names that never train."""
    if not spec:
        return set()
    backbone = [g for g in groups if g.name != HEAD]
    names = [g.name for g in groups]
    if spec == "backbone":
        return {p for g in backbone for p in g.params}
    match = re.fullmatch(r"stages:(\d+)", spec)
    if match:
        count = int(match.group(1))
        stages = [g for g in backbone if g.name != "stem"]
        if count > len(stages):
            raise ConvlabError(f"--freeze {spec}: the model has {len(stages)} stages ({', '.join(names)}); "
                               f"use stages:0 to {len(stages)}")
        return {p for g in backbone[:1 + count] for p in g.params}
    frozen: set[str] = set()
    all_params = [p for g in groups for p in g.params]
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        group = next((g for g in groups if g.name == item), None)
        hits = group.params if group else [p for p in all_params if _under(p, item)]
        if not hits:
            raise ConvlabError(f"--freeze {spec}: no group or parameter name starts with {item!r}; use backbone, "
                               f"stages:N, a group ({', '.join(names)}) or a module name such as "
                               f"{all_params[0].rsplit('.', 1)[0]}")
        frozen.update(hits)
    return frozen


# --- strategies ---------------------------------------------------------------------------------------

@dataclass
class Stage:
    """From epoch `first_epoch` on, the groups in `trainable` train (minus what --freeze holds)."""

    first_epoch: int
    trainable: list[str]


# A strategy gets the group names (bottom first, head last), the epochs and --head-epochs.
StrategyFn = Callable[[list[str], int, int], list[Stage]]
STRATEGIES: dict[str, tuple[StrategyFn, bool]] = {}


def register_strategy(name: str, discriminative: bool):
    """Decorator: register a strategy; `discriminative` strategies train the backbone at lr x --backbone-lr-mult."""

    def wrap(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = (fn, discriminative)
        return fn

    return wrap


@register_strategy("linear-probe", discriminative=False)
def linear_probe(names: list[str], epochs: int, head_epochs: int) -> list[Stage]:
    return [Stage(1, [HEAD])]


@register_strategy("full", discriminative=False)
def full(names: list[str], epochs: int, head_epochs: int) -> list[Stage]:
    return [Stage(1, list(names))]


@register_strategy("two-stage", discriminative=True)
def two_stage(names: list[str], epochs: int, head_epochs: int) -> list[Stage]:
    if head_epochs >= epochs:
        raise ConvlabError(f"--head-epochs {head_epochs} leaves no epoch to train everything (--epochs {epochs}); "
                           f"raise --epochs or lower --head-epochs, or use --strategy linear-probe")
    return [Stage(1, [HEAD]), Stage(head_epochs + 1, list(names))]


@register_strategy("gradual", discriminative=True)
def gradual(names: list[str], epochs: int, head_epochs: int) -> list[Stage]:
    """The head alone, then one more group per epoch from the top down (fastai/ULMFiT's gradual unfreezing)."""
    backbone = [n for n in names if n != HEAD]
    stages = [Stage(1, [HEAD])]
    for count in range(1, len(backbone) + 1):
        if count + 1 > epochs:
            break
        stages.append(Stage(count + 1, backbone[len(backbone) - count:] + [HEAD]))
    return stages


def plan_stages(strategy: str, groups: list[ParamGroup], epochs: int, head_epochs: int) -> list[Stage]:
    if strategy not in STRATEGIES:
        raise ConvlabError(f"unknown --strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[strategy][0]([g.name for g in groups], epochs, head_epochs)


def group_learning_rates(strategy: str, groups: list[ParamGroup], lr: float, backbone_mult: float) -> dict[str, float]:
    """The head trains at lr; the backbone at lr x backbone_mult for discriminative strategies, else at lr."""
    mult = backbone_mult if STRATEGIES[strategy][1] else 1.0
    return {g.name: lr if g.name == HEAD else lr * mult for g in groups}


# --- applying a stage ---------------------------------------------------------------------------------

def _keep_eval(module: nn.Module, inputs) -> None:
    module.training = False  # frozen BatchNorm: use and keep the running statistics, whatever model.train() said


class Freezer:
    """Applies a stage to a model: requires_grad per parameter, frozen BatchNorm held in eval mode."""

    def __init__(self, model: nn.Module, groups: list[ParamGroup], frozen: set[str] = frozenset(),
                 train_bn: bool = False):
        self.model = model
        self.groups = groups
        self.frozen = set(frozen)
        self.train_bn = train_bn
        self.trainable: list[str] = []
        self._hooks: dict[str, object] = {}

    def apply(self, trainable: list[str]) -> None:
        self.trainable = list(trainable)
        live = {p for g in self.groups if g.name in trainable for p in g.params} - self.frozen
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in live)
        for name, module in self.model.named_modules():
            if not isinstance(module, nn.modules.batchnorm._BatchNorm):
                continue
            params = [f"{name}.{p}" for p, _ in module.named_parameters()]
            frozen = not self.train_bn and bool(params) and not any(p in live for p in params)
            if frozen and name not in self._hooks:
                self._hooks[name] = module.register_forward_pre_hook(_keep_eval)
            elif not frozen and name in self._hooks:
                self._hooks.pop(name).remove()

    def trainable_now(self) -> list[str]:
        """The current stage's groups that really train: a group --freeze holds whole does not."""
        params = {g.name: g.params for g in self.groups}
        return [name for name in self.trainable if any(p not in self.frozen for p in params.get(name, []))]

    def frozen_bn(self) -> list[str]:
        return sorted(self._hooks)

    def release(self) -> None:
        """Remove the BatchNorm hooks (after training; the saved run needs none of this)."""
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()

    def state(self, strategy: str, stage: int, stages: int) -> dict:
        """A JSON-able record of the freeze state (kept in LoopState.extra["freeze"] for checkpoints)."""
        return {"strategy": strategy, "stage": stage, "stages": stages, "trainable": list(self.trainable),
                "frozen_params": sorted(self.frozen), "train_bn": self.train_bn}


def apply_freeze_state(model: nn.Module, state: dict) -> Freezer:
    """Re-apply a recorded freeze state (from Freezer.state) to a model, e.g. when resuming."""
    freezer = Freezer(model, parameter_groups(model), set(state.get("frozen_params", [])),
                      bool(state.get("train_bn", False)))
    freezer.apply(list(state["trainable"]))
    return freezer
