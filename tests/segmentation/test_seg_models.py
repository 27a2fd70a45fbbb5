"""Segmenters by name: every registry model for 1 and 3 channels, U-Nets on a classifier's features (a weights file,
a run), weights files with other classes and channels, fine-tuning groups, and tiny-unet learning shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_output import run_cli
from PIL import Image

from convlab.errors import ConvlabError
from convlab.models.freeze import parameter_groups, parse_freeze
from convlab.models.weights import save_safetensors
from convlab.segmentation.losses import build_segmentation_loss
from convlab.segmentation.models import SEGMENTERS, build_segmenter
from convlab.segmentation.synthetic import make_shape_masks

SLOW = {"deeplabv3_resnet50", "fcn_resnet50"}  # 35-42M parameters: seconds to build and run on a CPU
WITH_AUX = {"deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "fcn_resnet50"}


def _names():
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in SEGMENTERS]


def test_the_registry_holds_the_issue_segmenters():
    assert {"lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "fcn_resnet50",
            "unet", "tiny-unet"} <= set(SEGMENTERS)
    assert all(entry.description and entry.cpu for entry in SEGMENTERS.values())


def test_convlab_models_lists_the_segmenters(capsys):
    code, out, _ = run_cli(capsys, "models")
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("segmenters ("))
    listed = [line.split()[0] for line in lines[start + 1:start + 1 + len(SEGMENTERS)]]
    assert code == 0 and listed == list(SEGMENTERS)
    assert "U-Net, 3 levels of 16-64 channels" in lines[start + 1 + list(SEGMENTERS).index("tiny-unet")]


def test_an_unknown_segmenter_gets_suggestions():
    with pytest.raises(ConvlabError, match="unknown segmenter 'tiny_unet' for --model. Did you mean tiny-unet"):
        build_segmenter("tiny_unet", 3)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", _names())
def test_each_segmenter_gives_logits_at_the_input_size(name, channels):
    torch.manual_seed(0)
    segmenter = build_segmenter(name, 3, channels)
    x = torch.randn(2, channels, 64, 64)
    out = segmenter.train()(x)
    assert out["out"].shape == (2, 3, 64, 64)
    assert (out["aux"] is not None) == (name in WITH_AUX)
    if out["aux"] is not None:
        assert out["aux"].shape == (2, 3, 64, 64)
    with torch.no_grad():
        logits = segmenter.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 3, 64, 64)
    assert (segmenter.num_classes, segmenter.channels, segmenter.backbone_spec) == (3, channels, None)


@pytest.mark.parametrize("size", [(50, 77), (33, 96)])
def test_a_unet_takes_sizes_that_are_not_multiples_of_32(size):
    segmenter = build_segmenter("unet", 4, 1).eval()
    with torch.no_grad():
        assert segmenter(torch.randn(1, 1, *size)).shape == (1, 4, *size)


def test_a_backbone_is_only_for_the_unet():
    with pytest.raises(ConvlabError, match="--backbone torchvision:resnet18: --model fcn_resnet50 has its own encoder"):
        build_segmenter("fcn_resnet50", 3, backbone="torchvision:resnet18")


def test_a_segmenter_needs_two_classes():
    with pytest.raises(ConvlabError, match="at least two classes"):
        build_segmenter("tiny-unet", 1)


# --- U-Nets on a classifier's features ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet_file(tmp_path_factory):
    """An ImageNet-shaped torchvision mobilenet_v2 state dict (random weights) saved with safetensors."""
    import torchvision

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.safetensors"
    state = torchvision.models.mobilenet_v2(weights=None).state_dict()
    save_safetensors(state, path)
    return path, state


def test_a_unet_on_mobilenet_v2_takes_its_weights_file(mobilenet_file):
    path, state = mobilenet_file
    segmenter = build_segmenter("unet", 3, backbone="torchvision:mobilenet_v2", backbone_weights=str(path))
    assert segmenter.backbone_spec == "torchvision:mobilenet_v2"
    encoder = segmenter.model.backbone.state_dict()
    assert len(encoder) == len([k for k in state if k.startswith("features.")])
    assert all(torch.equal(v, state[f"features.{k}"]) for k, v in encoder.items())
    assert segmenter.model.strides == [2, 4, 8, 16, 32]
    assert segmenter.norm == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    rebuilt = build_segmenter("unet", 3, backbone=segmenter.backbone_spec)  # what loading a run does
    rebuilt.load_state_dict(segmenter.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 45, 70)
        assert torch.equal(rebuilt.eval()(x), segmenter.eval()(x))


def test_a_grayscale_unet_on_mobilenet_v2_averages_the_first_filters(mobilenet_file):
    path, state = mobilenet_file
    segmenter = build_segmenter("unet", 2, 1, backbone="torchvision:mobilenet_v2", backbone_weights=str(path))
    first = segmenter.model.backbone.state_dict()["0.0.weight"]
    assert first.shape[1] == 1
    assert torch.allclose(first, state["features.0.0.weight"].mean(1, keepdim=True) * 3)
    mean, std = segmenter.norm
    assert mean == pytest.approx([0.449]) and std == pytest.approx([0.226])
    with torch.no_grad():
        assert segmenter.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_a_unet_taps_a_resnet_at_strides_2_to_32(name):
    segmenter = build_segmenter("unet", 3, backbone=f"torchvision:{name}")
    assert segmenter.model.strides == [2, 4, 8, 16, 32]
    assert list(segmenter.model.backbone.return_layers) == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert segmenter.train()(torch.randn(2, 3, 40, 72))["out"].shape == (2, 3, 40, 72)


def test_a_backbone_weights_file_that_does_not_fit_names_the_file(mobilenet_file):
    path, _ = mobilenet_file
    with pytest.raises(ConvlabError, match=f"--weights {path} does not fit torchvision:resnet18"):
        build_segmenter("unet", 2, backbone="torchvision:resnet18", backbone_weights=str(path))


def test_a_classification_run_becomes_the_encoder(digits_run):
    size = digits_run.preprocess.size
    segmenter = build_segmenter("unet", 3, 3, backbone=str(digits_run.path))
    assert segmenter.backbone_spec == f"model:{digits_run.config.model.name}@1x{size[0]}x{size[1]}"
    features = digits_run.model.features.state_dict()
    encoder = segmenter.model.backbone.state_dict()
    first = next(iter(encoder))
    assert torch.allclose(encoder[first], features[first].repeat(1, 3, 1, 1) / 3)  # the gray network reads RGB
    assert all(torch.equal(v, features[k]) for k, v in encoder.items() if k != first)
    assert segmenter.norm[0] == pytest.approx(list(digits_run.preprocess.mean) * 3)
    with torch.no_grad():
        assert segmenter.eval()(torch.rand(1, 3, 40, 52)).shape == (1, 3, 40, 52)
    build_segmenter("unet", 3, 3, backbone=segmenter.backbone_spec).load_state_dict(segmenter.state_dict())


# --- weights files ------------------------------------------------------------------------------------------------

def test_torchvision_weights_load_before_the_classes_and_channels_are_rebuilt(tmp_path):
    import torchvision

    torch.manual_seed(2)
    voc = torchvision.models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None,
                                       num_classes=21).state_dict()
    torch.save(voc, tmp_path / "lraspp_voc.pt")
    segmenter = build_segmenter("lraspp_mobilenet_v3_large", 2, 1, weights=str(tmp_path / "lraspp_voc.pt"))
    state = segmenter.model.state_dict()
    rebuilt = {"backbone.0.0.weight", "classifier.low_classifier.weight", "classifier.low_classifier.bias",
               "classifier.high_classifier.weight", "classifier.high_classifier.bias"}
    assert all(torch.equal(v, voc[k]) for k, v in state.items() if k not in rebuilt)
    assert state["classifier.low_classifier.weight"].shape[0] == 2
    assert state["classifier.high_classifier.weight"].shape[0] == 2
    assert torch.allclose(state["backbone.0.0.weight"], voc["backbone.0.0.weight"].mean(1, keepdim=True) * 3)
    assert segmenter.norm == ([pytest.approx(0.449)], [pytest.approx(0.226)])
    assert (segmenter.num_classes, segmenter.channels) == (2, 1)


def test_a_segmenters_own_weights_file_round_trips(tmp_path):
    torch.manual_seed(3)
    segmenter = build_segmenter("tiny-unet", 3, 1)
    save_safetensors(segmenter.state_dict(), tmp_path / "seg.safetensors")
    loaded = build_segmenter("tiny-unet", 3, 1, weights=str(tmp_path / "seg.safetensors"))
    assert all(torch.equal(v, segmenter.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert loaded.norm is None


def test_a_weights_file_of_another_architecture_is_refused_in_one_line(tmp_path):
    save_safetensors(build_segmenter("tiny-unet", 3).state_dict(), tmp_path / "tiny.safetensors")
    with pytest.raises(ConvlabError) as err:
        build_segmenter("unet", 3, weights=str(tmp_path / "tiny.safetensors"))
    assert f"--weights {tmp_path / 'tiny.safetensors'} does not fit unet" in str(err.value)
    assert "\n" not in str(err.value)


# --- fine-tuning groups -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, heads", [
    ("tiny-unet", ["model.decoder", "model.head"]),
    ("deeplabv3_mobilenet_v3_large", ["model.classifier", "model.aux_classifier"])])
def test_freeze_backbone_holds_the_encoder_and_trains_the_rest(name, heads):
    segmenter = build_segmenter(name, 3)
    groups = parameter_groups(segmenter)
    assert groups[-1].name == "head" and groups[-1].modules == heads
    assert groups[0].name == "stem" and len(groups) > 3
    frozen = parse_freeze("backbone", groups)
    assert frozen == {n for n, _ in segmenter.named_parameters() if n.startswith("model.backbone.")}


def test_a_resnet_encoders_stem_is_what_comes_before_layer1():
    groups = parameter_groups(build_segmenter("unet", 3, backbone="torchvision:resnet18"))
    assert [(g.name, g.modules) for g in groups[:2]] == [("stem", ["model.backbone.conv1", "model.backbone.bn1"]),
                                                        ("stage1", ["model.backbone.layer1"])]


# --- learning -----------------------------------------------------------------------------------------------------

def test_tiny_unet_learns_shape_masks_in_a_few_steps(tmp_path):
    """25 steps of 8 generated 64 px images (about 4 s of one CPU core), shapes against the background: the
    held-out pixels are almost all right and the shapes' IoU is high (all-background scores 0.87 and 0; seeds
    0-2 reach 0.995 and 0.965 or more). One thread: the same steps on any machine (conftest puts it back)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = make_shape_masks(tmp_path, n_train=32, n_test=16, size=64, seed=0)
    images, masks = _tensors(data.train)
    test_images, test_masks = _tensors(data.test)
    segmenter = build_segmenter("tiny-unet", 2)
    loss_fn = build_segmentation_loss("dice+ce")
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    segmenter.train()
    for _ in range(25):
        batch = torch.randint(0, len(images), (8,), generator=generator)
        loss = loss_fn(segmenter(images[batch]), masks[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = segmenter.eval()(test_images).argmax(1)
    shape, truth = predicted == 1, test_masks == 1
    assert (predicted == test_masks).float().mean() >= 0.98
    assert (shape & truth).sum() / (shape | truth).sum() >= 0.9


def _tensors(items) -> tuple[torch.Tensor, torch.Tensor]:
    """Images normalized to about zero mean and unit spread; masks: shape (any class) = 1, background = 0."""
    images = np.stack([np.asarray(Image.open(item.path).convert("RGB")) for item in items])
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.3) / 0.3
    return x, torch.from_numpy(np.stack([item.mask for item in items]) > 0).long()
