"""Every preset's output shape on 8x8, 28x28 and 32x32 data; parameter counts of the texts' nets."""
import pytest
import torch

from convlab.errors import ConvlabError
from convlab.models import count_parameters, create_model, find_model
from convlab.models.registry import PRESETS

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["tiny-cnn", "mnist-cnn", "lenet", "small-cnn", "resnet8", "resnet20"])
def test_preset_output_shape(name, shape):
    model = create_model(name, shape[0], 7, shape[1:])
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    out.sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in model.parameters())


def test_presets_registered():
    assert {"tiny-cnn", "mnist-cnn", "lenet", "small-cnn", "resnet8", "resnet20"} <= set(PRESETS)


def test_texts_parameter_counts():
    # The Keras MNIST convnet (34,826) and the PyTorch CIFAR-10 tutorial net (62,006).
    assert count_parameters(create_model("mnist-cnn", 1, 10, 28)) == 34_826
    assert count_parameters(create_model("lenet", 3, 10, 32)) == 62_006


def test_resnet20_is_he_et_als_six_n_plus_two_layers():
    """ResNet-20 (n=3): 19 3x3 convs and the FC; with 1x1 projection shortcuts 272,474 parameters (the paper's
    0.27M), counted by hand: convs 432 + 6x2,304 + 4,608 + 5x9,216 + 18,432 + 5x36,864, projections 512 + 2,048,
    BatchNorm 2 x 784 channels, FC 650."""
    model = create_model("resnet20", 3, 10, 32)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19 and [len(model.layer1), len(model.layer2), len(model.layer3)] == [3, 3, 3]
    assert count_parameters(model) == 272_474
    assert count_parameters(create_model("resnet8", 3, 10, 32)) == 78_042  # the same builder with one block


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
