"""The presets pool before the ReLU; that must be the texts' Conv -> ReLU -> MaxPool function exactly."""
import torch
from torch import nn

from convlab.models.registry import create_model


def _texts_order(features: nn.Sequential) -> nn.Sequential:
    """Swap every (MaxPool, ReLU) pair that follows a conv back to (ReLU, MaxPool), sharing the modules."""
    layers = list(features)
    for i in range(len(layers) - 2):
        if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.MaxPool2d) and \
                isinstance(layers[i + 2], nn.ReLU):
            layers[i + 1], layers[i + 2] = layers[i + 2], layers[i + 1]
    return nn.Sequential(*layers)


def test_pool_then_relu_gives_the_texts_outputs_and_gradients():
    torch.manual_seed(0)
    model = create_model("mnist-cnn", 1, 10, 28).double()
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]
    texts = _texts_order(model.features)
    assert [type(m).__name__ for m in texts] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d"]
    x = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    ours = model.classifier(model.features(x))
    grads = torch.autograd.grad(ours.sum(), list(model.parameters()))
    theirs = model.classifier(texts(x))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    for a, b in zip(grads, torch.autograd.grad(theirs.sum(), list(model.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
