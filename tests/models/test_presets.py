"""Every preset's output shape on 8x8, 28x28 and 32x32 data; parameter counts of the texts' nets."""
import pytest
import torch

from convlab.errors import ConvlabError
from convlab.models import count_parameters, create_model, find_model
from convlab.models.registry import PRESETS

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["tiny-cnn", "mnist-cnn", "lenet", "small-cnn", "resnet8"])
def test_preset_output_shape(name, shape):
    model = create_model(name, shape[0], 7, shape[1:])
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    out.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters())


def test_presets_registered():
    assert {"tiny-cnn", "mnist-cnn", "lenet", "small-cnn", "resnet8"} <= set(PRESETS)


def test_texts_parameter_counts():
    # The Keras MNIST convnet (34,826) and the PyTorch CIFAR-10 tutorial net (62,006).
    assert count_parameters(create_model("mnist-cnn", 1, 10, 28)) == 34_826
    assert count_parameters(create_model("lenet", 3, 10, 32)) == 62_006


def test_mnist_cnn_layers_match_the_keras_convnet():
    model = create_model("mnist-cnn", 1, 10, 28)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (3, 3)), (32, 64, (3, 3))]
    assert model.classifier[-1].in_features == 5 * 5 * 64


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_adapt_to_one_channel_and_classes(name):
    model = create_model(name, 1, 4, 32)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 1


def test_unknown_model_suggests_nearest():
    with pytest.raises(ConvlabError, match="unknown model 'resnet81'.*Did you mean .*resnet18"):
        find_model("resnet81")


def test_too_small_input_gives_advice():
    with pytest.raises(ConvlabError, match="cannot run on 1x8x8 images.*--image-size"):
        create_model("alexnet", 1, 10, 8)
