"""Parameter groups, freeze specs, strategies, and what freezing really holds still during training."""
import pytest
import torch

from convlab.errors import ConvlabError
from convlab.training.freezing import optimizer_groups
from convlab.models.freeze import (STRATEGIES, Freezer, apply_freeze_state, group_learning_rates, parameter_groups,
                                   parse_freeze, plan_stages)
from convlab.models.registry import PRESETS, create_model
from convlab.training.callbacks import Callback
from convlab.training.freezing import FreezeSchedule
from convlab.training.loop import fit
from convlab.training.optim import build_optimizer, build_schedule
from convlab.config import OptimConfig

MODELS = sorted(PRESETS) + ["resnet18", "mobilenet_v3_small", "vgg11"]


def _model(name, classes=5):
    from convlab.models import presets  # noqa: F401  (registers the presets)

    return create_model(name, 3 if name in ("resnet18", "mobilenet_v3_small", "vgg11") else 1, classes, 32)


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_is_in_exactly_one_group_and_the_head_is_the_classifier(name):
    model = _model(name)
    groups = parameter_groups(model)
    names = [g.name for g in groups]
    assert names[0] == "stem" and names[-1] == "head" and len(set(names)) == len(names)
    assigned = [p for g in groups for p in g.params]
    assert sorted(assigned) == sorted(n for n, _ in model.named_parameters())
    head_weight = dict(model.named_parameters())[groups[-1].params[0]]
    assert head_weight.shape[0] == 5  # the layer that gives the 5 class scores


def test_resnet_groups_are_named_by_stage():
    groups = {g.name: g.modules for g in parameter_groups(_model("resnet18"))}
    assert groups == {"stem": ["conv1", "bn1"], "stage1": ["layer1"], "stage2": ["layer2"], "stage3": ["layer3"],
                      "stage4": ["layer4"], "head": ["fc"]}


def test_parse_freeze_specs():
    groups = parameter_groups(_model("resnet8"))
    by_name = {g.name: set(g.params) for g in groups}
    assert parse_freeze("backbone", groups) == set().union(*(v for k, v in by_name.items() if k != "head"))
    assert parse_freeze("stages:1", groups) == by_name["stem"] | by_name["stage1"]
    assert parse_freeze("stage2,conv1", groups) == by_name["stage2"] | {"conv1.weight"}
    assert parse_freeze("layer1.0.bn1", groups) == {"layer1.0.bn1.weight", "layer1.0.bn1.bias"}
    with pytest.raises(ConvlabError, match=r"--freeze layer9: no group or parameter name starts with 'layer9'"):
        parse_freeze("layer9", groups)
    with pytest.raises(ConvlabError, match="has 3 stages"):
        parse_freeze("stages:4", groups)


def test_strategies_plan_their_stages():
    groups = parameter_groups(_model("resnet8"))  # stem, stage1..3, head
    assert set(STRATEGIES) == {"linear-probe", "full", "two-stage", "gradual"}
    probe = plan_stages("linear-probe", groups, 5, 1)
    assert [(s.first_epoch, s.trainable) for s in probe] == [(1, ["head"])]
    two = plan_stages("two-stage", groups, 5, 2)
    assert [(s.first_epoch, s.trainable) for s in two] == [(1, ["head"]), (3, ["stem", "stage1", "stage2", "stage3",
                                                                              "head"])]
    grad = plan_stages("gradual", groups, 10, 1)
    assert [(s.first_epoch, s.trainable) for s in grad] == [
        (1, ["head"]), (2, ["stage3", "head"]), (3, ["stage2", "stage3", "head"]),
        (4, ["stage1", "stage2", "stage3", "head"]), (5, ["stem", "stage1", "stage2", "stage3", "head"])]
    with pytest.raises(ConvlabError, match="--head-epochs 3 leaves no epoch"):
        plan_stages("two-stage", groups, 3, 3)


class _Batches:
    """A tiny stand-in for BatchLoader: fixed random batches."""

    def __init__(self, channels=3, size=16, classes=5, batches=3):
        gen = torch.Generator().manual_seed(0)
        self.data = [(torch.randn(8, channels, size, size, generator=gen), torch.randint(0, classes, (8,),
                                                                                          generator=gen))
                     for _ in range(batches)]
        self.images = self.data[0][0]
        self.device = self.images.device
        self.num_samples = 8 * batches

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        return iter(self.data)


def _train(model, strategy, epochs=2, train_bn=False, freeze=None, head_epochs=1, lr=1e-2, record=None):
    groups = parameter_groups(model)
    stages = plan_stages(strategy, groups, epochs, head_epochs)
    rates = group_learning_rates(strategy, groups, lr, 0.1)
    freezer = Freezer(model, groups, parse_freeze(freeze, groups), train_bn)
    optimizer = build_optimizer(model, OptimConfig(optimizer="sgd", lr=lr), optimizer_groups(model, groups, rates))
    schedule = build_schedule(optimizer, OptimConfig(schedule="none"), epochs, 3)
    callbacks = [FreezeSchedule(freezer, stages, strategy)] + ([record] if record else [])
    return fit(model, _Batches(), None, optimizer, schedule, torch.nn.CrossEntropyLoss(), epochs, callbacks)


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_linear_probe_leaves_frozen_parameters_and_batchnorm_statistics_untouched():
    torch.manual_seed(0)
    model = _model("resnet8")
    model.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)  # take RGB batches
    before = _snapshot(model)
    _train(model, "linear-probe", epochs=2)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # running_mean/var and num_batches_tracked included


def test_train_bn_lets_frozen_batchnorm_update_its_statistics_but_not_its_weights():
    torch.manual_seed(0)
    model = _model("resnet8")
    model.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
    before = _snapshot(model)
    _train(model, "linear-probe", epochs=1, train_bn=True)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "bn1.running_mean" in changed and "layer2.0.bn2.running_var" in changed
    assert not any(k.endswith((".weight", ".bias")) and not k.startswith("fc.") for k in changed)


def test_two_stage_unfreezes_the_backbone_in_its_second_stage_and_records_the_state():
    torch.manual_seed(0)
    model = _model("resnet8")
    model.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
    seen = []

    class Record(Callback):
        def on_epoch_end(self, state, logs):
            seen.append((dict(state.extra["freeze"]), _snapshot(state.model)))

    start = _snapshot(model)
    state = _train(model, "two-stage", epochs=3, freeze="stem", record=Record())
    (first, after1), (second, after2), _ = seen
    assert first["stage"] == 1 and first["trainable"] == ["head"]
    assert second["stage"] == 2 and second["trainable"] == ["stem", "stage1", "stage2", "stage3", "head"]
    assert torch.equal(after1["layer1.0.conv1.weight"], start["layer1.0.conv1.weight"])
    assert not torch.equal(after2["layer1.0.conv1.weight"], after1["layer1.0.conv1.weight"])
    # --freeze stem holds the stem through both stages, BatchNorm statistics included
    for key in ("conv1.weight", "bn1.weight", "bn1.running_mean"):
        assert torch.equal(after2[key], start[key]), key
    assert state.extra["freeze"]["frozen_params"] == ["bn1.bias", "bn1.weight", "conv1.weight"]

    # The record re-applies to a fresh model: same requires_grad, same frozen BatchNorm
    fresh = _model("resnet8")
    freezer = apply_freeze_state(fresh, first)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}
    assert "layer1.0.bn1" in freezer.frozen_bn()
    fresh.train()
    fresh(torch.randn(2, 1, 16, 16))
    assert not fresh.layer1[0].bn1.training and fresh.fc.training


def test_learning_rate_per_group_as_configured_through_a_onecycle_schedule():
    model = _model("resnet8")
    groups = parameter_groups(model)
    rates = group_learning_rates("two-stage", groups, 0.01, 0.1)
    assert rates == {"stem": pytest.approx(0.001), "stage1": pytest.approx(0.001), "stage2": pytest.approx(0.001),
                     "stage3": pytest.approx(0.001), "head": 0.01}
    assert set(group_learning_rates("full", groups, 0.01, 0.1).values()) == {0.01}
    opt = build_optimizer(model, OptimConfig(optimizer="adam", lr=0.01), optimizer_groups(model, groups, rates))
    assert [g["name"] for g in opt.param_groups] == ["head", "stem", "stage1", "stage2", "stage3"]
    schedule = build_schedule(opt, OptimConfig(lr=0.01, schedule="onecycle"), 2, 10)
    for _ in range(7):
        opt.step()
        schedule.after_batch()
    head, stem = opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]
    assert stem == pytest.approx(head * 0.1)
    assert opt.param_groups[0]["max_lr"] == pytest.approx(0.01)
