"""Grad-CAM: shapes, agreement with a hand-written reference, and a peak on the decisive region."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convlab.errors import ConvlabError
from convlab.insight.gradcam import conv_layers, find_layer, grad_cam, gradcam_files, overlay
from convlab.models.registry import create_model
from quadrants import bar_data, train_bar_model


@pytest.mark.parametrize("name, size", [("tiny-cnn", 16), ("small-cnn", 16), ("lenet", 32), ("resnet8", 16),
                                        ("resnet18", 32)])
def test_heatmap_has_the_image_size_for_presets_and_torchvision(name, size):
    torch.manual_seed(0)
    model = create_model(name, 3, 4, (size, size + 4))
    result = grad_cam(model, torch.randn(2, 3, size, size + 4))
    assert result.heatmaps.shape == (2, size, size + 4)
    assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1 + 1e-6
    assert result.layer == conv_layers(model)[-1][0]  # default: the last conv layer
    assert result.probs.shape == (2, 4)


def test_matches_a_hand_written_reference_in_float64():
    """Split small-cnn at its last conv, take dy_c/dA with autograd, and build the map by the formula."""
    torch.manual_seed(1)
    model = create_model("small-cnn", 1, 5, (12, 12)).double().eval()
    x = torch.randn(3, 1, 12, 12, dtype=torch.float64)
    result = grad_cam(model, x, layer="features.3", class_index=2)

    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    head, tail = model.features[:4], torch.nn.Sequential(model.features[4:], model.classifier)
    activations = head(x).detach().requires_grad_(True)  # (3, 32, 6, 6): the conv output, before ReLU
    tail(activations)[:, 2].sum().backward()
    weights = activations.grad.mean(dim=(2, 3))  # (3, 32)
    expected = torch.relu(torch.einsum("nk,nkhw->nhw", weights, activations.detach()))
    np.testing.assert_allclose(result.raw, expected.numpy(), rtol=1e-10, atol=1e-12)
    assert list(result.classes) == [2, 2, 2]


@pytest.mark.slow
def test_peaks_on_the_region_that_decides_the_class():
    rng = np.random.default_rng(0)
    model = train_bar_model(rng)
    x_test, y_test, quadrants = bar_data(64, rng)
    assert (model.eval()(x_test).argmax(1) == y_test).float().mean() > 0.95  # it learned the rule

    result = grad_cam(model, x_test)  # for the predicted class
    peaks = [np.unravel_index(h.argmax(), h.shape) for h in result.heatmaps]
    in_bar_quadrant = [(py // 8) * 2 + (px // 8) == q for (py, px), q in zip(peaks, quadrants)]
    assert np.mean(in_bar_quadrant) >= 0.9, list(zip(peaks, quadrants))


def test_unknown_layer_is_named_with_suggestions():
    model = create_model("small-cnn", 1, 3, (8, 8))
    with pytest.raises(ConvlabError, match=r"--layer 'features.9'.*conv layers: features.0, features.3"):
        find_layer(model, "features.9")


def test_overlay_resizes_the_heatmap_to_the_image():
    image = np.zeros((40, 30), np.uint8)
    heat = np.zeros((8, 6))
    heat[0, 0] = 1.0
    out = overlay(image, heat)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > out[-1, -1, 0] and out[-1, -1, 2] > out[0, 0, 2]  # jet: red at 1, blue at 0


def test_gradcam_files_write_one_png_per_image(digits_run, tmp_path):
    paths = []
    for i in range(2):
        pixels = np.full((8, 8), 40 * i, np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        paths.append(tmp_path / f"img{i}.png")
    written = gradcam_files(digits_run, paths, tmp_path / "out", class_label="3")
    assert [p.name for p in written] == ["img0-gradcam.png", "img1-gradcam.png"]
    assert all(Image.open(p).size[0] > 100 for p in written)
    with pytest.raises(ConvlabError, match=r"--class 'eleven' is not a class of run"):
        gradcam_files(digits_run, paths, tmp_path / "out", class_label="eleven")


@pytest.fixture
def same_stems(tmp_path):
    """cat/001.png and dog/001.png (and a unique one): one stem in two folders."""
    paths = []
    for folder, stem, value in (("cat", "001", 0), ("dog", "001", 200), ("dog", "002", 90)):
        (tmp_path / "in" / folder).mkdir(parents=True, exist_ok=True)
        paths.append(tmp_path / "in" / folder / f"{stem}.png")
        Image.fromarray(np.full((8, 8), value, np.uint8)).save(paths[-1])
    return paths


def test_output_names_are_distinct_when_stems_repeat(tmp_path):
    from convlab.insight.outputs import output_stems

    assert output_stems([tmp_path / "cat/001.png", tmp_path / "dog/001.png", tmp_path / "dog/002.png"]) == [
        "cat_001", "dog_001", "002"]
    assert output_stems([tmp_path / "a/x/1.png", tmp_path / "a/y/z/1.png"]) == ["x_1", "y_z_1"]
    assert output_stems([tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.png"]) == ["a.png", "a.jpg", "b"]


def test_gradcam_and_attribute_keep_both_images_of_one_stem(digits_run, same_stems, tmp_path, capsys):
    from convlab.cli import main

    folder = str(same_stems[0].parent.parent)
    for command, what in (("gradcam", "gradcam"), ("attribute", "attribution")):
        out = tmp_path / command
        assert main([command, str(digits_run.path), str(same_stems[0]), str(same_stems[1]), "--out", str(out)]) == 0
        assert sorted(p.name for p in out.glob("*.png")) == [f"cat_001-{what}.png", f"dog_001-{what}.png"]
        assert main([command, str(digits_run.path), folder, "--out", str(tmp_path / "all")]) == 0
    capsys.readouterr()
    cat, dog = (np.load(tmp_path / "attribute" / f"{name}-gradcam.npy") for name in ("cat_001", "dog_001"))
    assert not np.array_equal(cat, dog)  # each its own image's map, neither overwritten
    assert {p.name for p in (tmp_path / "all").glob("*.png")} >= {"cat_001-gradcam.png", "dog_001-gradcam.png",
                                                                  "002-gradcam.png", "002-attribution.png"}
