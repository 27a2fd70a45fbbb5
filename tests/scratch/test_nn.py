"""Layers, models and optimizers against torch.nn/torch.optim: names, default init, outputs, gradients, steps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn as tnn
from torchvision.models.resnet import BasicBlock as TorchBasicBlock

from convlab import scratch
from convlab.models.registry import PRESETS, create_model
from convlab.models.to_scratch import to_scratch
from convlab.scratch import nn
from convlab.scratch.gradcheck import check_layer
from scratch_parity import assert_close

LAYERS = [
    ("conv", lambda: tnn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 7)),
    ("conv-dilated-nobias", lambda: tnn.Conv2d(3, 2, 2, dilation=2, bias=False), (2, 3, 6, 6)),
    ("linear", lambda: tnn.Linear(5, 3), (4, 5)),
    ("batchnorm", lambda: tnn.BatchNorm2d(3), (4, 3, 3, 3)),
    ("maxpool", lambda: tnn.MaxPool2d(2), (2, 3, 6, 6)),
    ("avgpool", lambda: tnn.AvgPool2d(3, stride=2, padding=1), (2, 3, 7, 7)),
    ("gap", lambda: tnn.AdaptiveAvgPool2d(1), (2, 3, 4, 4)),
    ("sequential", lambda: tnn.Sequential(tnn.Conv2d(2, 3, 3), tnn.ReLU(), tnn.Flatten(), tnn.Linear(27, 4),
                                          tnn.Tanh(), tnn.Linear(4, 2), tnn.Sigmoid()), (3, 2, 5, 5)),
    ("basicblock", lambda: TorchBasicBlock(3, 3), (2, 3, 5, 5)),
    ("basicblock-projection", lambda: TorchBasicBlock(
        3, 4, 2, tnn.Sequential(tnn.Conv2d(3, 4, 1, 2, bias=False), tnn.BatchNorm2d(4))), (2, 3, 6, 6)),
]


@pytest.mark.parametrize("name, make, shape", LAYERS, ids=[case[0] for case in LAYERS])
def test_layer_matches_torch_with_every_parameter_gradient(rng, name, make, shape):
    torch.manual_seed(0)
    layer = make().double()
    twin = to_scratch(layer, np.float64)
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in layer.named_parameters()]
    x = rng.standard_normal(shape)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = layer(x_t)
    dout = rng.standard_normal(tuple(out_t.shape))
    out_t.backward(torch.tensor(dout))
    out = twin(x)
    dx = twin.backward(dout)
    assert_close(out, out_t.detach().numpy(), what="out")
    assert_close(dx, x_t.grad.numpy(), what="dx")
    for (pname, p), (_, p_t) in zip(twin.named_parameters(), layer.named_parameters()):
        assert_close(p.grad, p_t.grad.numpy(), what=pname)
    for key, value in layer.state_dict().items():  # running statistics moved the same way
        assert_close(twin.state_dict()[key], value.numpy(), what=key)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=np.float64), (2, 2, 5, 5)),
    (lambda: nn.Linear(4, 3, dtype=np.float64), (3, 4)),
    (lambda: nn.BatchNorm2d(2, dtype=np.float64), (3, 2, 3, 3)),
    (lambda: nn.BasicBlock(2, 3, stride=2, dtype=np.float64), (2, 2, 4, 4)),
    (lambda: nn.AvgPool2d(2, 1), (1, 2, 4, 4)),
    (lambda: nn.Sequential(nn.Tanh(), nn.MaxPool2d(2), nn.Sigmoid()), (1, 2, 4, 4)),
], ids=["conv", "linear", "batchnorm", "basicblock", "avgpool", "tanh-maxpool-sigmoid"])
def test_finite_differences_agree_with_backward(rng, make, shape):
    nn.manual_seed(0)
    errors = check_layer(make(), rng.standard_normal(shape))
    assert max(errors.values()) < 1e-6, errors


def test_default_init_follows_torch():
    nn.manual_seed(0)
    conv, linear, bn = nn.Conv2d(8, 16, 3), nn.Linear(200, 10), nn.BatchNorm2d(4)
    assert conv.weight.data.dtype == np.float32
    bound = 1 / np.sqrt(8 * 9)
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.9 * bound
    assert np.abs(linear.bias.data).max() <= 1 / np.sqrt(200)
    torch_std = tnn.Linear(200, 10).weight.std().item()
    assert abs(linear.weight.data.std() - torch_std) < 0.2 * torch_std
    assert (bn.weight.data == 1).all() and (bn.bias.data == 0).all() and (bn.running_var == 1).all()


def test_basic_block_builds_its_own_projection_when_the_shape_changes():
    block = nn.BasicBlock(4, 8, stride=2)
    assert list(block.state_dict()) == list(TorchBasicBlock(
        4, 8, 2, tnn.Sequential(tnn.Conv2d(4, 8, 1, 2, bias=False), tnn.BatchNorm2d(8))).state_dict())
    assert nn.BasicBlock(4, 4).downsample is None


def test_train_and_eval_switch_every_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5))
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


SHAPES = {"tiny-cnn": (1, 12, 12), "mnist-cnn": (1, 16, 16), "lenet": (3, 16, 16), "small-cnn": (1, 12, 12),
          "resnet8": (3, 12, 12), "resnet20": (3, 8, 8)}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_twins_have_torchs_state_dict_keys(name):
    channels, h, w = SHAPES[name]
    model = create_model(name, channels, 10, (h, w), dropout=0.2)
    twin = to_scratch(model)
    assert list(twin.state_dict()) == list(model.state_dict())
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in model.named_parameters()]
    for key, value in model.state_dict().items():
        assert twin.state_dict()[key].shape == tuple(value.shape), key


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_twenty_sgd_steps_give_the_same_losses_in_both_engines(rng, name):
    """Same weights, same batches, SGD with nesterov momentum and weight decay, float64."""
    channels, h, w = SHAPES[name]
    torch.manual_seed(0)
    model = create_model(name, channels, 10, (h, w)).double()
    twin = to_scratch(model, np.float64)
    opt_t = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    opt_s = scratch.optim.SGD(list(twin.parameters()), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    loss_t, loss_s = tnn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    model.train()
    twin.train()
    for step in range(20):
        x, y = rng.standard_normal((8, channels, h, w)), rng.integers(0, 10, 8)
        loss = loss_t(model(torch.tensor(x)), torch.tensor(y))
        opt_t.zero_grad()
        loss.backward()
        opt_t.step()
        mine = loss_s(twin(x), y)
        opt_s.zero_grad()
        twin.backward(loss_s.backward())
        opt_s.step()
        assert abs(mine - loss.item()) < 1e-6, f"step {step}: {mine} vs {loss.item()}"
    for key, value in model.state_dict().items():
        assert_close(twin.state_dict()[key], value.numpy(), tolerance=1e-6, what=key)


@pytest.mark.parametrize("name, make_torch, make_scratch", [
    ("adam", lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01),
     lambda p: scratch.optim.Adam(p, lr=0.01, weight_decay=0.01)),
    ("adamw", lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
     lambda p: scratch.optim.AdamW(p, lr=0.01, weight_decay=0.1)),
    ("sgd-momentum", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5),
     lambda p: scratch.optim.SGD(p, lr=0.1, momentum=0.5)),
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.1), lambda p: scratch.optim.SGD(p, lr=0.1)),
])
def test_optimizer_updates_match_torch(rng, name, make_torch, make_scratch):
    start = rng.standard_normal((3, 4))
    p_t = torch.tensor(start, requires_grad=True)
    p_s = nn.Parameter(start.copy())
    opt_t, opt_s = make_torch([p_t]), make_scratch([p_s])
    for _ in range(5):
        grad = rng.standard_normal(start.shape)
        p_t.grad = torch.tensor(grad)
        opt_t.step()
        p_s.grad = grad
        opt_s.step()
    assert_close(p_s.data, p_t.detach().numpy())


def test_l1_and_l2_penalties_add_their_gradients():
    p = nn.Parameter(np.array([[-2.0, 0.5], [1.0, 0.0]]))
    p.grad = np.zeros_like(p.data)
    penalty = scratch.optim.add_penalty_grads([p], l1=0.1, l2=0.5)
    assert penalty == pytest.approx(0.1 * 3.5 + 0.25 * 5.25)
    np.testing.assert_allclose(p.grad, 0.1 * np.sign(p.data) + 0.5 * p.data)
