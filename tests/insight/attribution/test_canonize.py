"""The canonized copy for LRP: same logits, one ReLU per use, additions as modules; LRP on the presets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from convlab.errors import ConvlabError
from convlab.insight.attribution import METHODS
from convlab.models.registry import create_model

pytest.importorskip("zennit")
from zennit.layer import Sum  # noqa: E402

from convlab.insight.attribution.canonize import canonize  # noqa: E402


def _trained_batchnorm(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, so merging it into the conv is really tested."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name, channels, size", [("mnist-cnn", 1, 28), ("lenet", 3, 32), ("resnet8", 3, 16),
                                                  pytest.param("resnet18", 3, 32, marks=pytest.mark.slow)])
def test_lrp_runs_on_a_canonized_copy_with_the_same_logits(name, channels, size):
    torch.manual_seed(0)
    model = _trained_batchnorm(create_model(name, channels, 5, (size, size)))
    x = torch.randn(2, channels, size, size)
    copy_ = canonize(model, x)
    with torch.no_grad():
        expected, got = model(x), copy_(x)
    assert (expected - got).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())
    leaves = [m for m in copy_.modules() if not any(True for _ in m.children())]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in leaves)  # merged into the convs
    assert not any(getattr(m, "inplace", False) for m in leaves)
    calls = [node.target for node in copy_.graph.nodes if node.op == "call_module"]
    assert len(calls) == len(set(calls))  # no module is called twice
    residual = name in ("resnet8", "resnet18")
    assert any(isinstance(m, Sum) for m in leaves) == residual
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())  # the model itself is untouched

    target = expected.argmax(1)
    relevance = METHODS["lrp"]().attribute(model, x, target).detach()
    assert relevance.shape == (2, size, size) and torch.isfinite(relevance).all() and relevance.abs().sum() > 0


def test_lrp_names_a_layer_it_has_no_rule_for():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LayerNorm(4 * 6 * 6),
                          nn.Linear(4 * 6 * 6, 3)).eval()
    with pytest.raises(ConvlabError, match=r"lrp: layer '3' \(LayerNorm\) has no LRP rule; methods that work on "
                                           r"this model: saliency, gradcam, gradcam\+\+, ig"):
        METHODS["lrp"]().attribute(model, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))


def test_a_model_fx_cannot_trace_is_a_one_line_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            x = x.flatten(1)
            return self.fc(x) if x.sum() > 0 else -self.fc(x)  # depends on the data: no static graph

    with pytest.raises(ConvlabError, match=r"lrp: cannot trace Branchy into a graph of modules"):
        canonize(Branchy(), torch.randn(1, 1, 2, 2))


def test_lrp_conserves_the_target_logit_without_biases():
    """With no biases, the z+ (conv), epsilon (dense) and flat (first layer) rules pass the whole target
    logit back: the relevance of the pixels sums to it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.Conv2d(4, 6, 3, bias=False), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 4 * 4, 3, bias=False)).double().eval()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(1)
    relevance = METHODS["lrp"]().attribute(model, x, target).detach()
    np.testing.assert_allclose(relevance.sum(dim=(1, 2)).numpy(), logits.gather(1, target[:, None])[:, 0].numpy(),
                               rtol=1e-3)


@pytest.mark.parametrize("name, channels, size", [("mnist-cnn", 1, 28), ("resnet8", 3, 16),
                                                  pytest.param("resnet18", 3, 32, marks=pytest.mark.slow)])
def test_guided_backprop_runs_on_the_canonized_copy(name, channels, size):
    """On mnist-cnn (each ReLU used once) the copy gives what captum gives on the model itself; on the ResNets,
    whose blocks call one ReLU twice, the copy's one ReLU per call gives finite, non-zero maps."""
    from captum.attr import GuidedBackprop

    torch.manual_seed(0)
    model = _trained_batchnorm(create_model(name, channels, 5, (size, size)))
    x = torch.randn(2, channels, size, size)
    target = torch.tensor([1, 3])
    maps = METHODS["guided-backprop"]().attribute(model, x, target).detach()
    assert maps.shape == (2, size, size) and torch.isfinite(maps).all() and maps.abs().sum() > 0
    if name == "mnist-cnn":
        for module in model.modules():
            if hasattr(module, "inplace"):
                module.inplace = False
        expected = GuidedBackprop(model).attribute(x, target=target).detach().sum(1)
        np.testing.assert_allclose(maps.numpy(), expected.numpy(), rtol=1e-5, atol=1e-7)
