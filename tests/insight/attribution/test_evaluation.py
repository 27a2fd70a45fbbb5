"""Deletion/insertion AUC against hand-computed curves, the randomization check, and `convlab attribute`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import auc
from torch import nn

from convlab.cli import main
from convlab.data.decode import load_image
from convlab.data.splits import stratified_sample
from convlab.insight.attribution import METHODS, Settings
from convlab.insight.attribution.baselines import blurred
from convlab.insight.attribution.evaluate import STEPS, deletion_insertion, randomization_check, spearman

pytest.importorskip("captum")


class PixelModel(nn.Module):
    """Two classes whose logits are +/- (x . w): a known linear rule, so the most important pixels are known."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.double())

    def forward(self, x):
        score = (x.flatten(1) * self.weight.flatten()).sum(1)
        return torch.stack([score, -score], 1)


def test_deletion_and_insertion_areas_match_a_hand_computed_curve():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    model = PixelModel(torch.randn(6, 6))
    target = torch.tensor([0, 1])
    maps = torch.rand(2, 6, 6, dtype=torch.float64)
    deletion, insertion = deletion_insertion(model, x, target, maps)

    blur = blurred(x)
    fractions = np.ceil(np.linspace(0, 1, STEPS + 1) * 36) / 36  # the share of the pixels changed at each step
    for i in range(2):
        order = np.argsort(-maps[i].flatten().numpy())
        removed, inserted = [], []
        for f in fractions:
            chosen = torch.zeros(36, dtype=torch.bool)
            chosen[order[:round(f * 36)]] = True
            chosen = chosen.reshape(1, 1, 6, 6)
            for start, other, curve in ((x, blur, removed), (blur, x, inserted)):
                image = torch.where(chosen, other[i:i + 1], start[i:i + 1])
                curve.append(torch.softmax(model(image), 1)[0, target[i]].item())
        assert deletion[i] == pytest.approx(auc(fractions, removed), rel=1e-9)
        assert insertion[i] == pytest.approx(auc(fractions, inserted), rel=1e-9)


def test_the_true_importance_beats_a_random_map_and_its_reverse_loses():
    torch.manual_seed(1)
    weight = torch.randn(8, 8)
    model = PixelModel(weight)
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    target = torch.zeros(16, dtype=torch.long)
    truth = ((x - blurred(x))[:, 0] * weight)  # each pixel's contribution to the score against the blurred copy
    random = torch.rand(16, 8, 8, dtype=torch.float64)
    (del_true, ins_true), (del_rand, ins_rand), (del_rev, ins_rev) = [
        deletion_insertion(model, x, target, m) for m in (truth, random, -truth)]
    assert del_true.mean() < del_rand.mean() < del_rev.mean()
    assert ins_true.mean() > ins_rand.mean() > ins_rev.mean()


def test_spearman_is_one_for_the_same_ranking_and_zero_for_a_constant_map():
    a = torch.rand(3, 5, 5)
    assert spearman(a, a * 2 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.zeros_like(a)) == 0.0


@pytest.mark.slow
def test_randomization_changes_gradient_maps_of_every_layer():
    torch.manual_seed(0)
    from convlab.models.registry import create_model

    model = create_model("mnist-cnn", 1, 3, (16, 16)).eval()
    x = torch.randn(4, 1, 16, 16)
    target = torch.tensor([0, 1, 2, 0])
    method = METHODS["ig"](Settings(steps=16))
    original = method.attribute(model, x, target).detach()
    steps = randomization_check(method, model, x, target, None)
    assert [s["layers"] for s in steps] == ["classifier.1", "classifier.1 .. features.3", "classifier.1 .. features.0"]
    assert abs(steps[-1]["spearman"]) < 0.5
    same = randomization_check(METHODS["ig"](Settings(steps=16)), model, x, target, None)
    assert same == steps  # seeded: the same check twice gives the same numbers
    assert torch.equal(method.attribute(model, x, target).detach(), original)  # the model itself is untouched


def test_the_magnitude_of_a_map_keeps_the_images_zeros_whatever_the_weights():
    """Why the criterion is the signed maps' correlation: integrated gradients from a black image is exactly 0
    on every black pixel for any weights, so the ranks of |maps| agree on most pixels of a mostly black
    image even with every layer random, while the signed maps' do not."""
    torch.manual_seed(0)
    from convlab.models.registry import create_model

    model = create_model("mnist-cnn", 1, 3, (16, 16)).eval()
    x = torch.zeros(6, 1, 16, 16)
    x[:, :, 4:12, 6:9] = torch.rand(6, 1, 8, 3) + 0.5  # a stroke on black
    steps = randomization_check(METHODS["ig"](Settings(steps=16)), model, x, torch.tensor([0, 1, 2] * 2), None)
    assert steps[-1]["spearman_abs"] > 0.7 and abs(steps[-1]["spearman"]) < 0.3, steps[-1]


@pytest.mark.slow
def test_guided_backprop_fails_the_randomization_check_and_the_gradients_pass():
    """Adebayo et al.'s finding on the quadrant model: Guided Backprop's maps stay like the trained model's
    with every layer random (measured 0.60); saliency (signed: -0.04), Grad-CAM (0.09) and IG (0.00) change."""
    from quadrants import bar_data, train_bar_model

    rng = np.random.default_rng(0)
    model = train_bar_model(rng)
    x, _, _ = bar_data(16, rng)
    target = model(x).argmax(1)
    last = {name: randomization_check(METHODS[name](), model, x, target, None)[-1]["spearman"]
            for name in ("guided-backprop", "saliency", "gradcam", "ig", "guided-gradcam")}
    assert last["guided-backprop"] > 0.5, last
    assert all(abs(last[name]) < 0.3 for name in ("saliency", "gradcam", "ig")), last
    # the warnings say what this measures: guided-backprop fails, guided-gradcam (its product with Grad-CAM)
    # passes, and only its Guided Backprop factor is said to fail
    assert last["guided-gradcam"] < 0.5, last
    assert METHODS["guided-backprop"].warning.startswith("guided-backprop failed the model-randomization check")
    warning = METHODS["guided-gradcam"].warning
    assert "its Guided Backprop factor fails the model-randomization check" in warning
    assert "guided-gradcam failed" not in warning and "guided-gradcam fails" not in warning


def test_the_check_compares_the_signed_maps_not_the_pictures():
    """A method whose picture is blank but whose signed map is the image itself (the same for any weights):
    the check must see the signed map, so the correlation stays 1 with every layer random."""
    from convlab.insight.attribution.registry import Method
    from convlab.models.registry import create_model

    class ImageItself(Method):
        def attribute(self, model, inputs, target, baselines=None):
            return torch.zeros(inputs.shape[0], *inputs.shape[2:])

        def signed_attribute(self, model, inputs, target, baselines=None):
            return inputs.sum(1)

    torch.manual_seed(0)
    model = create_model("tiny-cnn", 1, 2, (8, 8)).eval()
    steps = randomization_check(ImageItself(), model, torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 0]), None)
    assert [s["spearman"] for s in steps] == pytest.approx([1.0] * len(steps))
    assert [s["spearman_abs"] for s in steps] == pytest.approx([1.0] * len(steps))


def test_saliency_is_checked_on_the_signed_gradient():
    from captum.attr import Saliency

    torch.manual_seed(0)
    from convlab.models.registry import create_model

    model = create_model("tiny-cnn", 3, 2, (8, 8)).eval()
    x = torch.randn(2, 3, 8, 8)
    target = torch.tensor([0, 1])
    method = METHODS["saliency"]()
    gradient = Saliency(model).attribute(x, target=target, abs=False)
    np.testing.assert_allclose(method.signed_attribute(model, x, target).numpy(), gradient.sum(1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(method.attribute(model, x, target).numpy(), gradient.abs().amax(1).numpy(), rtol=1e-6)
    assert (method.signed_attribute(model, x, target) < 0).any()


@pytest.fixture
def digit_pngs(tmp_path):
    paths = []
    for i, (top, left) in enumerate([(1, 3), (2, 1)]):
        pixels = np.zeros((8, 8), np.uint8)
        pixels[top:top + 5, left:left + 3] = 255
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


@pytest.mark.slow
def test_attribute_command_writes_figures_maps_and_the_evaluation(digits_run, digit_pngs, tmp_path, capsys):
    out = tmp_path / "attr"
    code = main(["attribute", str(digits_run.path), *map(str, digit_pngs), "--method", "gradcam,saliency,occlusion",
                 "--evaluate", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.split() == [str(out / n) for n in ("digit0-attribution.png", "digit1-attribution.png",
                                                           "evaluation.json", "evaluation.md")]
    assert "gradcam:" in captured.err and "ms per image (2 images)" in captured.err
    saliency = np.load(out / "digit0-saliency.npy")
    assert saliency.shape == (8, 8) and saliency.min() >= 0 and saliency.max() > 0
    rows = json.loads((out / "evaluation.json").read_text())
    assert [r["method"] for r in rows] == ["random map", "gradcam", "saliency", "occlusion"]
    preprocess = digits_run.preprocess
    images = np.stack([load_image(p, preprocess.channels, tuple(preprocess.size)) for p in digit_pngs])
    inputs = preprocess.norm.apply(torch.from_numpy(images))
    model = digits_run.model.cpu().eval()
    with torch.no_grad():
        target = model(inputs).argmax(1)
    maps = torch.from_numpy(np.stack([np.load(out / f"digit{i}-saliency.npy") for i in range(2)]))
    deletion, insertion = deletion_insertion(model, inputs, target, maps)  # the saved maps' own curves
    assert (rows[2]["deletion_auc"], rows[2]["insertion_auc"]) == pytest.approx((deletion.mean(), insertion.mean()))
    assert len(rows[1]["randomization"]) == 2  # tiny-cnn: the dense layer, then the conv
    assert (out / "evaluation.md").read_text().startswith("| method | deletion AUC")
    assert Image.open(out / "digit0-attribution.png").size[0] >= 4 * 150  # the image and three maps


def test_attribute_command_errors_are_one_line(digits_run, digit_pngs, tmp_path, capsys):
    run = str(digits_run.path)
    cases = [
        (["--method", "shap"], "--method 'shap' is not an attribution method"),
        (["--target", "eleven"], "--target 'eleven' is not a class of run"),
        (["--samples", "0"], "--samples must be an integer from 1 to 2000, got 0"),
    ]
    for extra, message in cases:
        assert main(["attribute", run, str(digit_pngs[0]), "--out", str(tmp_path), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["attribute", run, "--out", str(tmp_path)]) == 2
    assert "name at least one IMAGE_OR_FOLDER, or pass --test-images N" in capsys.readouterr().err


def test_attribute_command_takes_the_runs_test_images(digits_run, digit_pngs, tmp_path, capsys):
    out = tmp_path / "test-split"
    assert main(["attribute", str(digits_run.path), "--test-images", "3", "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / f"{i}-attribution.png") for i in range(3)]
    from convlab.insight.gradcam import run_grad_cam

    test = digits_run.test_data()
    expected = run_grad_cam(digits_run, test.images[stratified_sample(test.labels, 3, seed=0)]).heatmaps[2]
    np.testing.assert_allclose(np.load(out / "2-gradcam.npy"), expected, rtol=1e-5, atol=1e-7)
    assert main(["attribute", str(digits_run.path), str(digit_pngs[0]), "--test-images", "3",
                 "--out", str(out)]) == 2
    assert "pass image files or --test-images N, not both" in capsys.readouterr().err


def test_guided_gradcam_prints_its_warning(digits_run, digit_pngs, tmp_path, capsys):
    assert main(["attribute", str(digits_run.path), str(digit_pngs[0]), "--method", "guided-gradcam",
                 "--out", str(tmp_path / "g")]) == 0
    err = capsys.readouterr().err
    assert ("warning: guided-gradcam ranked pixels no better, or barely better, than a random map by deletion on "
            "MNIST models (docs/attribution.md), and its Guided Backprop factor fails the model-randomization "
            "check") in err


def test_a_missing_library_says_what_to_install(digits_run, digit_pngs, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "captum.attr", None)  # an import of it now raises ImportError
    assert main(["attribute", str(digits_run.path), str(digit_pngs[0]), "--method", "ig",
                 "--out", str(tmp_path / "m")]) == 2
    assert "ig needs captum.attr: pip install -e '.[attribution]'" in capsys.readouterr().err


def test_the_package_root_attributes_a_loaded_run_as_the_command_does(digits_run, digit_pngs, tmp_path):
    """convlab.attribute(run, ...) is the Python form of `convlab attribute` (the run layer sits below insight)."""
    import convlab

    assert "attribute" in convlab.__all__
    result = convlab.attribute(convlab.load_run(digits_run.path), [str(p) for p in digit_pngs], "saliency",
                               log=lambda line: None)
    out = tmp_path / "cli"
    assert main(["attribute", str(digits_run.path), *map(str, digit_pngs), "--method", "saliency",
                 "--out", str(out)]) == 0
    np.testing.assert_allclose(result.maps["saliency"][0], np.load(out / "digit0-saliency.npy"), rtol=1e-5, atol=1e-7)


def test_attribution_leaves_the_callers_random_state_alone():
    """smoothgrad and captum's own lime seed the global RNG for captum, the randomization check for
    reset_parameters: torch.rand afterwards is what it is after the same seeding without them."""
    from convlab.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("tiny-cnn", 1, 2, (8, 8)).eval()
    x = torch.randn(2, 1, 8, 8)
    target = torch.tensor([0, 1])
    captums_lime = METHODS["lime"](Settings(samples=10, seed=5))
    captums_lime.batched = False
    torch.manual_seed(42)
    expected = torch.rand(5)
    torch.manual_seed(42)
    METHODS["smoothgrad"](Settings(seed=7)).attribute(model, x, target)
    captums_lime.attribute(model, x, target)
    randomization_check(METHODS["saliency"](), model, x, target, None)
    assert torch.equal(torch.rand(5), expected)


def test_test_images_are_a_seeded_sample_of_every_class(tmp_path, make_image_folder):
    """An image folder's test split lists its classes one after the other: its first 6 are all cats."""
    from convlab.data.imagefolder import load_image_folder

    make_image_folder(tmp_path / "train", per_class=4, size=(8, 8))
    make_image_folder(tmp_path / "test", per_class=10, size=(8, 8))
    labels = load_image_folder(tmp_path, 8).test.labels
    assert list(labels[:6]) == [0] * 6
    sample = stratified_sample(labels, 6, seed=0)
    assert np.bincount(labels[sample], minlength=3).tolist() == [2, 2, 2]
    assert np.bincount(labels[stratified_sample(labels, 15, seed=0)], minlength=3).tolist() == [5, 5, 5]
    np.testing.assert_array_equal(stratified_sample(labels, 6, seed=0), sample)
    assert not np.array_equal(stratified_sample(labels, 6, seed=1), sample)
    np.testing.assert_array_equal(stratified_sample(labels, 40, seed=0), np.arange(30))  # more than there are
