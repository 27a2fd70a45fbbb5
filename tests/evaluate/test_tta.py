"""Test-time augmentation (--tta): the views, their averaged probabilities against a hand computation, and eval
and predict using them; other tasks' runs and unknown names are refused in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF
from torchvision.transforms.v2 import functional as F

from convlab.cli import main
from convlab.errors import ConvlabError
from convlab.evaluate.metrics import classification_metrics
from convlab.models.tta import TTA, five_crop_size, tta_views

COUNT = 24  # test images used


def reference_probabilities(run, views: list[np.ndarray]) -> np.ndarray:
    """The mean of softmax(model(view)) over the views, computed here in float64 from the model's logits."""
    model = run.model.eval()
    probs = []
    with torch.no_grad():
        for view in views:
            logits = model(run.preprocess.norm.apply(torch.from_numpy(np.ascontiguousarray(view))))
            probs.append(torch.softmax(logits.double(), dim=1))
    return torch.stack(probs).mean(0).numpy()


def hand_five_crops(image: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    """(..., h, w) -> top-left, top-right, bottom-left, bottom-right and centre crops of `size`, by slicing
    (the centre as torchvision rounds it: top = round((h - H) / 2))."""
    h, w = image.shape[-2:]
    height, width = size
    top, left = int(round((h - height) / 2)), int(round((w - width) / 2))
    return [image[..., :height, :width], image[..., :height, w - width:], image[..., h - height:, :width],
            image[..., h - height:, w - width:], image[..., top:top + height, left:left + width]]


@pytest.fixture(scope="module")
def images(digits_run) -> np.ndarray:
    return digits_run.test_data().images[:COUNT]


def test_none_is_the_plain_path(digits_run, images):
    plain = digits_run.probabilities(digits_run.predict_logits(images))
    assert np.array_equal(digits_run.predict_arrays(images), plain)
    assert np.array_equal(digits_run.predict_arrays(images, "none"), plain)
    assert tta_views(images, digits_run.preprocess.size, "none")[0] is images  # nothing copied


def test_flip_averages_the_image_and_its_mirror(digits_run, images):
    expected = reference_probabilities(digits_run, [images, images[..., ::-1]])
    probs = digits_run.predict_arrays(images, "flip")
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert np.abs(probs - digits_run.predict_arrays(images)).max() > 1e-2  # the mirror changed something
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_flip_logits_are_the_mean_of_both_passes(digits_run, images):
    logits, probs = digits_run.predict_outputs(images, "flip")
    expected = (digits_run.predict_logits(images) + digits_run.predict_logits(images[..., ::-1].copy())) / 2
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    assert logits.dtype == np.float32 and probs.dtype == np.float64


@pytest.mark.parametrize("size, source", [((224, 224), (256, 256)), ((32, 32), (36, 36)), ((28, 28), (32, 32)),
                                          ((8, 8), (9, 9)), ((2, 3), (3, 4)), ((64, 48), (73, 54))])
def test_five_crop_source_size(size, source):
    assert five_crop_size(size) == source  # side / 0.875, floored as timm does, and at least one pixel more


def test_five_crops_match_torchvision_and_hand_slices():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 3, 37, 41), dtype=np.uint8)  # odd sizes: the centre is rounded
    size = (32, 36)
    views = tta_views(images, size, "five-crop")
    assert five_crop_size(size) == (36, 41)  # the images are resized to (36, 41) before cropping
    resized = F.resize(torch.from_numpy(images), [36, 41], antialias=True).numpy()  # as the views resize
    for view, hand in zip(views, hand_five_crops(resized, size)):
        assert view.dtype == np.uint8 and view.shape == (3, 3, *size)
        assert np.array_equal(view, hand)
    # torchvision's PIL five_crop (v1) on each image at the source size gives the same crops
    source = rng.integers(0, 256, (2, 3, 36, 41), dtype=np.uint8)
    views = tta_views(source, size, "five-crop")
    for i, pixels in enumerate(source):
        crops = TF.five_crop(Image.fromarray(pixels.transpose(1, 2, 0)), list(size))
        for view, crop in zip(views, crops):
            assert np.array_equal(view[i], np.asarray(crop).transpose(2, 0, 1))


def test_five_crop_on_images_at_the_input_size_resizes_them_up(digits_run, images):
    """eval's test split is already 8x8: five-crop resizes it to 9x9 and averages the five 8x8 crops."""
    views = tta_views(images, (8, 8), "five-crop")
    up = F.resize(torch.from_numpy(images), [9, 9], antialias=True).numpy()
    assert len(views) == 5 and all(np.array_equal(v, c) for v, c in zip(views, hand_five_crops(up, (8, 8))))
    expected = reference_probabilities(digits_run, hand_five_crops(up, (8, 8)))
    np.testing.assert_allclose(digits_run.predict_arrays(images, "five-crop"), expected, atol=1e-6)


def test_evaluate_with_tta_keeps_the_plain_metrics(digits_run):
    test = digits_run.test_data()
    metrics = digits_run.evaluate(tta="flip")
    expected = classification_metrics(test.labels, reference_probabilities(
        digits_run, [test.images, test.images[..., ::-1]]), digits_run.classes)
    assert metrics["tta"] == "flip" and metrics["accuracy"] == pytest.approx(expected["accuracy"])
    assert metrics["without_tta"] == digits_run.evaluate()
    assert metrics["accuracy"] != metrics["without_tta"]["accuracy"]  # digits are not mirror-symmetric


def test_eval_prints_both_lines(digits_run, capsys):
    plain, flipped = digits_run.evaluate(), digits_run.evaluate(tta="flip")
    assert main(["eval", str(digits_run.path), "--tta", "flip"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(digits_run.path))]
    assert len(lines) == 2
    assert lines[0].endswith("(without TTA)") and f"accuracy {plain['accuracy']:.4f}" in lines[0]
    assert lines[1].endswith("(--tta flip)") and f"accuracy {flipped['accuracy']:.4f}" in lines[1]
    assert main(["eval", str(digits_run.path), "--tta", "flip", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["tta"] == "flip" and document["accuracy"] == flipped["accuracy"]
    assert document["without_tta"]["accuracy"] == plain["accuracy"]
    assert main(["eval", str(digits_run.path), "--json"]) == 0  # without --tta: as before
    assert "tta" not in json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def large_pngs(digits_run, tmp_path_factory):
    """Three test digits as 24x24 PNG files: larger than the 8x8 input, so five-crop has something to crop."""
    folder = tmp_path_factory.mktemp("large-digits")
    for i, pixels in enumerate(digits_run.test_data().images[:3]):
        Image.fromarray(pixels[0]).resize((24, 24), Image.BILINEAR).save(folder / f"d{i}.png")
    return sorted(folder.glob("*.png"))


@pytest.mark.parametrize("tta", ["flip", "five-crop"])
def test_predict_json_averages_every_image(digits_run, large_pngs, capsys, tta):
    from convlab.data.decode import load_image

    assert main(["predict", str(digits_run.path), *map(str, large_pngs), "--tta", tta, "--top-k", "10",
                 "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    source = TTA[tta].source_size((8, 8))  # five-crop reads each file at 9x9, flip at 8x8
    loaded = np.stack([load_image(path, 1, source) for path in large_pngs])
    expected = reference_probabilities(digits_run, tta_views(loaded, (8, 8), tta))
    for result, row in zip(results, expected):
        got = {entry["label"]: entry["prob"] for entry in result["top"]}
        np.testing.assert_allclose([got[label] for label in digits_run.classes], row, atol=1e-6)
    plain = digits_run.predict(large_pngs, top_k=10)
    assert [r["top"] for r in results] != [r["top"] for r in plain]


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_unknown_tta_is_one_line_exit_2(digits_run, large_pngs, capsys, command):
    paths = [str(large_pngs[0])] if command == "predict" else []
    assert main([command, str(digits_run.path), *paths, "--tta", "rotate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tta must be one of none, flip, five-crop, got 'rotate'" in err
    with pytest.raises(ConvlabError, match="--tta must be one of"):
        digits_run.evaluate(tta="rotate")


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    """A one-epoch segmentation run on a few generated 32x32 masks: only for being refused."""
    from convlab import train
    from convlab.segmentation.synthetic import make_shape_masks

    folder = tmp_path_factory.mktemp("masks")
    make_shape_masks(folder / "data", n_train=8, n_test=2, size=32, seed=0)
    threads = torch.get_num_threads()
    try:
        return train(data=f"masks:{folder / 'data'}", model="tiny-unet", image_size=32, epochs=1, batch_size=4,
                     val_fraction=0, threads=1, out=str(folder / "run"), quiet=True)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_segmentation_runs_refuse_tta(mask_run, large_pngs, capsys, command):
    paths = [str(large_pngs[0])] if command == "predict" else []
    assert main([command, str(mask_run.path), *paths, "--tta", "flip"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tta is for classify and multilabel runs" in err and "segment run" in err
