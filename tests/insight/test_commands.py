"""The insight commands end to end on a small digits run: files written, errors in one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from convlab.cli import main
from convlab.insight.features import capture_feature_maps, tile
from convlab.models.registry import create_model


@pytest.fixture
def digit_png(tmp_path):
    pixels = np.zeros((8, 8), np.uint8)
    pixels[1:7, 3:5] = 255  # a "1"
    path = tmp_path / "one.png"
    Image.fromarray(pixels).save(path)
    return path


def test_gradcam_command(digits_run, digit_png, tmp_path, capsys):
    assert main(["gradcam", str(digits_run.path), str(digit_png), "--out", str(tmp_path / "cams")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "cams" / "one-gradcam.png")]
    assert main(["gradcam", str(digits_run.path), str(digit_png), "--layer", "nope", "--out", str(tmp_path)]) == 2
    assert "--layer 'nope': no such layer in ConvNet" in capsys.readouterr().err
    assert main(["gradcam", str(digits_run.path), str(tmp_path / "missing.png"), "--out", str(tmp_path)]) == 2
    assert "missing.png does not exist" in capsys.readouterr().err


def test_features_command(digits_run, digit_png, tmp_path, capsys):
    assert main(["features", str(digits_run.path), str(digit_png), "--out", str(tmp_path / "f")]) == 0
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[1] for p in written] == ["features-01-features_0.png", "filters.png"]
    assert all(Image.open(p).size[0] > 200 for p in written)


@pytest.mark.slow
def test_report_command(digits_run, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(digits_run.path), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "no-run")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(digits_run.path), "--out", str(out), "--method", "none"]) == 0
    assert ">Attribution" not in out.read_text() and ">Config" in out.read_text()
    assert main(["report", str(digits_run.path), "--out", str(out), "--method", "gradcam,lpr"]) == 2
    assert "--method 'lpr' is not an attribution method; did you mean lrp?" in capsys.readouterr().err


def test_feature_maps_of_every_conv_layer_match_a_direct_forward():
    model = create_model("mnist-cnn", 1, 10, (28, 28)).eval()
    x = torch.randn(1, 1, 28, 28)
    found = capture_feature_maps(model, x)
    assert [name for name, _, _ in found] == ["features.0", "features.3"]
    np.testing.assert_allclose(found[0][2], model.features[0](x)[0].detach().numpy(), rtol=1e-6)
    assert found[1][2].shape == (64, 11, 11)


def test_tile_scales_each_map_and_leaves_gaps():
    grid = tile(np.stack([np.arange(4.0).reshape(2, 2), np.full((2, 2), 7.0)]), columns=2)
    assert grid.shape == (2, 5)
    np.testing.assert_allclose(grid[:, :2], [[0, 1 / 3], [2 / 3, 1]])
    assert np.isnan(grid[:, 2]).all() and (grid[:, 3:] == 0).all()
