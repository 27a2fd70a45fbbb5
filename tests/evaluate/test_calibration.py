"""Calibration: ECE by hand and on synthetic data, NLL against torch, temperature scaling, the diagram."""
import numpy as np
import pytest
import torch
from PIL import Image

from convlab.evaluate.calibration import (BINS, apply_temperature, calibration_inputs, calibration_metrics,
                                          draw_reliability, expected_calibration_error, fit_temperature,
                                          negative_log_likelihood, reliability)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def classifier_data(seed=0, n=20000, k=5):
    """Logits z and labels drawn from softmax(z): softmax(z) is perfectly calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    labels = (softmax(z).cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return z, labels


def multilabel_data(seed=0, n=20000, k=3):
    """Logits z and 0/1 labels drawn from sigmoid(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 2
    return z, (rng.random((n, k)) < sigmoid(z)).astype(np.int64)


def test_ece_by_hand():
    confidences = np.array([0.1, 0.3, 0.4, 0.8, 0.9, 1.0])
    correct = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    # 4 bins: (0, .25] {0.1}: conf .1, acc 0      -> 1/6 * |0 - .1|   = 0.1 / 6
    #         (.25, .5] {0.3, 0.4}: conf .35, acc .5 -> 2/6 * |.5 - .35| = 0.3 / 6
    #         (.5, .75] empty                     -> 0
    #         (.75, 1] {.8, .9, 1}: conf .9, acc 2/3 -> 3/6 * |2/3 - .9| = 0.7 / 6
    # ECE = 1.1 / 6
    assert expected_calibration_error(confidences, correct, bins=4) == pytest.approx(1.1 / 6)
    table = reliability(confidences, correct, bins=4)
    assert table["lower"] == [0.0, 0.25, 0.5, 0.75]
    assert table["upper"] == [0.25, 0.5, 0.75, 1.0]
    assert table["count"] == [1, 2, 0, 3]
    assert table["confidence"] == pytest.approx([0.1, 0.35, None, 0.9])
    assert table["accuracy"] == pytest.approx([0.0, 0.5, None, 2 / 3])


def test_a_value_on_a_bin_edge_goes_to_the_lower_bin():
    table = reliability(np.array([0.0, 0.25, 0.5, 1.0]), np.ones(4, dtype=bool), bins=4)
    # 0 -> bin 0 (the closed end); 0.25 -> (0, .25]; 0.5 -> (.25, .5]; 1 -> (.75, 1]
    assert table["count"] == [2, 1, 0, 1]
    # with the default bins, each upper edge lands in its own bin, never the next one
    default = reliability(np.array(reliability([], [])["upper"]), np.ones(BINS, dtype=bool))
    assert default["count"] == [1] * BINS


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_large():
    z, labels = classifier_data()
    assert calibration_metrics(softmax(z), labels)["ece"] < 0.02
    assert calibration_metrics(softmax(z * 3), labels)["ece"] > 0.15

    zm, targets = multilabel_data()
    assert calibration_metrics(sigmoid(zm), targets)["ece"] < 0.02
    assert calibration_metrics(sigmoid(zm * 3), targets)["ece"] > 0.05


def test_calibration_metrics_keys_and_types():
    z, labels = classifier_data(n=500)
    m = calibration_metrics(softmax(z), labels)
    assert set(m) == {"ece", "nll", "bins"}
    assert isinstance(m["ece"], float) and isinstance(m["nll"], float) and m["bins"] == BINS == 15


def test_multilabel_calibration_inputs_by_hand():
    probs = np.array([[0.9, 0.2], [0.4, 0.6]])
    targets = np.array([[1, 1], [0, 1]])
    confidences, correct = calibration_inputs(probs, targets)
    # each (image, label) is a forecast: confidence max(p, 1 - p), correct (p >= .5) == target
    assert confidences == pytest.approx([0.9, 0.8, 0.6, 0.6])
    assert correct.tolist() == [True, False, True, True]


def test_classifier_calibration_inputs_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    confidences, correct = calibration_inputs(probs, np.array([0, 1]))
    assert confidences == pytest.approx([0.7, 0.4])
    assert correct.tolist() == [True, False]


def test_calibration_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(5,\)"):
        calibration_metrics(np.full((4, 3), 1 / 3), np.zeros(5, dtype=np.int64))


def test_nll_matches_torch():
    z, labels = classifier_data(n=1000)
    expected = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(labels)).item()
    assert negative_log_likelihood(softmax(z), labels) == pytest.approx(expected, rel=1e-9)

    zm, targets = multilabel_data(n=1000)
    expected = torch.nn.functional.binary_cross_entropy(torch.tensor(sigmoid(zm)), torch.tensor(targets * 1.0))
    assert negative_log_likelihood(sigmoid(zm), targets) == pytest.approx(expected.item(), rel=1e-9)


def test_nll_clips_a_zero_probability():
    # p[target] = 0 -> -log(1e-12), finite
    assert negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-np.log(1e-12))


def test_fit_temperature_recovers_the_overconfidence():
    z, labels = classifier_data()
    overconfident = z * 3
    t = fit_temperature(overconfident, labels)
    assert isinstance(t, float)
    assert t == pytest.approx(3.0, rel=0.1)
    scaled = apply_temperature(overconfident, t)
    assert negative_log_likelihood(softmax(scaled), labels) < negative_log_likelihood(softmax(overconfident),
                                                                                      labels) - 0.3
    assert (scaled.argmax(axis=1) == overconfident.argmax(axis=1)).all()
    assert calibration_metrics(softmax(scaled), labels)["ece"] < 0.02


def test_fit_temperature_per_label():
    zm, targets = multilabel_data()
    scale = np.array([3.0, 1.0, 0.5])  # over-confident, calibrated, under-confident
    t = fit_temperature(zm * scale, targets)
    assert isinstance(t, list) and len(t) == 3
    assert t == pytest.approx(scale.tolist(), rel=0.1)
    scaled = apply_temperature(zm * scale, np.array(t))
    assert negative_log_likelihood(sigmoid(scaled), targets) < negative_log_likelihood(sigmoid(zm * scale),
                                                                                       targets)


def test_fit_temperature_is_clamped():
    # labels that ignore the logits: the best T is infinite (uniform probabilities); it stops at 20
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 4))
    assert fit_temperature(z, rng.integers(0, 4, size=2000)) <= 20.0


def test_draw_reliability_writes_a_png(tmp_path):
    z, labels = classifier_data(n=2000)
    path = tmp_path / "reliability.png"
    draw_reliability(path, softmax(z * 3), labels, title="test")
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (500, 600)

    zm, targets = multilabel_data(n=500)
    draw_reliability(tmp_path / "multilabel.png", sigmoid(zm), targets)
    with Image.open(tmp_path / "multilabel.png") as image:
        assert image.format == "PNG"
