"""Sliding-window prediction equals a whole-image pass where it should, and runs the windows the formula says."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from convlab.errors import ConvlabError
from convlab.segmentation.tiles import gaussian_window, predict_tiled, windows

K = 3


def model(kernel: int, layers: int = 1) -> torch.nn.Module:
    """A small random conv net (3 channels in, K logits out, zero padding keeping the size), in eval mode."""
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(3 if i == 0 else K, K, kernel, padding=kernel // 2) for i in range(layers)]
    net = torch.nn.Sequential(*[m for conv in convs for m in (conv, torch.nn.ReLU())][:-1])
    return net.eval()


def whole(net, image):
    with torch.no_grad():
        return net(image[None])[0].softmax(0)


class Counting:
    """A forward that records how many windows it was given, batch by batch."""

    def __init__(self, net):
        self.net, self.batches = net, []

    def __call__(self, x):
        self.batches.append(len(x))
        return self.net(x)


def test_an_image_of_the_tile_size_is_one_window_and_the_whole_image_pass():
    net, image = model(3, layers=3), torch.randn(3, 32, 32)
    counting = Counting(net)
    tiled = predict_tiled(counting, image, tile=32, overlap=0.5, num_classes=K)
    assert counting.batches == [1]
    torch.testing.assert_close(tiled, whole(net, image), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_a_torchvision_segmentation_model_on_an_image_of_the_tile_size_is_the_whole_image_pass():
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(0)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=K).eval()
    image = torch.randn(3, 64, 64)
    with torch.no_grad():
        expected = net(image[None])["out"][0].softmax(0)
    torch.testing.assert_close(predict_tiled(lambda x: net(x)["out"], image, 64, 0.5, K), expected, atol=1e-6, rtol=0)


def test_an_image_smaller_than_the_tile_is_padded_right_and_bottom_then_cropped():
    image = torch.randn(3, 20, 27)
    deep = model(3, layers=3)  # the definition, for any model: zeros padded on, the result cropped off
    expected = whole(deep, F.pad(image, (0, 32 - 27, 0, 32 - 20)))[:, :20, :27]
    torch.testing.assert_close(predict_tiled(deep, image, 32, 0.25, K), expected, atol=1e-6, rtol=0)
    one_conv = model(5)  # one zero-padded conv: padding the input with zeros is what the conv does anyway
    torch.testing.assert_close(predict_tiled(one_conv, image, 32, 0.25, K), whole(one_conv, image), atol=1e-6, rtol=0)
    assert not torch.allclose(expected, whole(deep, image), atol=1e-4)  # a deeper net does see the padding


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_a_pointwise_model_gives_the_whole_image_output_on_a_large_image(overlap):
    net, image = model(1), torch.randn(3, 75, 130)
    tiled = predict_tiled(net, image, tile=32, overlap=overlap, num_classes=K, batch_size=5)
    assert tiled.shape == (K, 75, 130)
    torch.testing.assert_close(tiled, whole(net, image), atol=1e-6, rtol=0)


@pytest.mark.parametrize("height, width, tile, overlap", [(100, 70, 32, 0.5), (64, 64, 32, 0.0), (33, 200, 16, 0.25),
                                                           (10, 90, 32, 0.5)])
def test_windows_are_full_size_cover_the_image_and_number_as_the_formula_says(height, width, tile, overlap):
    stride = round(tile * (1 - overlap))
    along = [1 if length <= tile else math.ceil((length - tile) / stride) + 1 for length in (height, width)]
    spots = windows(max(height, tile), max(width, tile), tile, overlap)
    assert len(spots) == along[0] * along[1]
    covered = torch.zeros(max(height, tile), max(width, tile), dtype=torch.bool)
    for top, left in spots:
        assert top + tile <= covered.shape[0] and left + tile <= covered.shape[1]
        covered[top:top + tile, left:left + tile] = True
    assert covered.all()
    counting = Counting(model(1))
    predict_tiled(counting, torch.randn(3, height, width), tile, overlap, K, batch_size=4)
    assert sum(counting.batches) == len(spots) and max(counting.batches) <= 4


def test_blending_weights_peak_in_the_middle_and_never_reach_zero():
    weights = gaussian_window(33)
    assert weights[16, 16] == 1.0 and weights.min() > 0
    assert weights[0, 0] == pytest.approx(math.exp(-0.5 * (16 / (33 / 8)) ** 2 * 2), rel=1e-4)


@pytest.mark.parametrize("tile, overlap, message", [(8, 0.5, r"--tile 8: a tile is at least 16 pixels"),
                                                    (32, 1.0, r"--overlap 1.0: the overlap is a fraction"),
                                                    (32, -0.1, r"--overlap -0.1")])
def test_bad_tiling_options_are_refused_by_name(tile, overlap, message):
    with pytest.raises(ConvlabError, match=message):
        predict_tiled(model(1), torch.randn(3, 40, 40), tile, overlap, K)


def test_a_model_giving_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"logits of shape \(1, 3, 16, 16\) for 1 windows of 32x32"):
        predict_tiled(lambda x: torch.zeros(len(x), K, 16, 16), torch.randn(3, 32, 32), 32, 0.0, K)
