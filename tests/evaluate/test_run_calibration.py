"""Calibration in a run: ECE and NLL in every classifier's metrics.json and reliability.png, and --calibrate
temperature fitted on validation, kept in preprocess.json and applied by predict, eval and export."""
from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest
from rich.console import Console

from convlab import load_run, train
from convlab.cli import main
from convlab.evaluate.calibration import expected_calibration_error, negative_log_likelihood
from convlab.models.inference import softmax


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A digits run with --calibrate temperature, and what it printed."""
    printed = io.StringIO()
    out = tmp_path_factory.mktemp("runs") / "calibrated"
    run = train(data="digits", model="tiny-cnn", epochs=3, threads=1, val_fraction=0.2, calibrate="temperature",
                out=str(out), quiet=True, console=Console(file=printed, soft_wrap=True))
    return run, printed.getvalue()


def test_every_classifier_run_measures_its_calibration(digits_run):
    metrics = json.loads((digits_run.path / "metrics.json").read_text())
    test = digits_run.test_data()
    probs = digits_run.predict_arrays(test.images)
    confidences, correct = probs.max(1), probs.argmax(1) == test.labels
    assert metrics["ece"] == pytest.approx(expected_calibration_error(confidences, correct))
    assert metrics["nll"] == pytest.approx(-np.log(probs[np.arange(len(probs)), test.labels]).mean())
    assert sum(metrics["reliability"]["count"]) == len(test) and len(metrics["reliability"]["count"]) == 15
    assert "before_temperature" not in metrics  # no temperature was fitted
    assert (digits_run.path / "reliability.png").stat().st_size > 0


def test_temperature_lowers_the_validation_nll_and_keeps_the_argmax(calibrated):
    from convlab.data.run_data import load_run_data
    from convlab.tasks.classify import validation_set

    run, printed = calibrated
    temperature = json.loads((run.path / "preprocess.json").read_text())["temperature"]
    assert isinstance(temperature, float) and temperature > 0 and temperature == run.preprocess.temperature
    before, after = map(float, re.search(r"NLL (\S+) -> (\S+)", printed).groups())
    assert after <= before
    val = validation_set(load_run_data(run.config))
    logits = run.predict_logits(val.images)
    assert negative_log_likelihood(run.probabilities(logits), val.labels) == pytest.approx(after, abs=1e-4)
    assert negative_log_likelihood(softmax(logits), val.labels) == pytest.approx(before, abs=1e-4)
    test = run.test_data()
    calibrated_probs = run.predict_arrays(test.images)
    plain = softmax(run.predict_logits(test.images))
    assert (calibrated_probs.argmax(1) == plain.argmax(1)).all()  # dividing by T > 0 keeps the order
    np.testing.assert_allclose(calibrated_probs, softmax(run.predict_logits(test.images) / np.float32(temperature)),
                               atol=1e-6)


def test_eval_prints_ece_and_nll_before_and_after(calibrated, capsys):
    run, _ = calibrated
    metrics = json.loads((run.path / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["eval", str(run.path)]) == 0
    out = capsys.readouterr().out
    before, after = metrics["before_temperature"], metrics
    assert f"ECE {before['ece']:.4f} -> {after['ece']:.4f}" in out
    assert f"NLL {before['nll']:.4f} -> {after['nll']:.4f}" in out


def test_predict_applies_the_temperature(calibrated, tmp_path, capsys):
    run, _ = calibrated
    folder = shutil.copytree(run.path, tmp_path / "run")
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(run.test_data().images[0, 0]).save(image)
    capsys.readouterr()
    assert main(["predict", str(folder), str(image), "--json", "--top-k", "1"]) == 0
    with_t = json.loads(capsys.readouterr().out)[0]["top"][0]
    preprocess = json.loads((folder / "preprocess.json").read_text())
    del preprocess["temperature"]
    (folder / "preprocess.json").write_text(json.dumps(preprocess))
    assert main(["predict", str(folder), str(image), "--json", "--top-k", "1"]) == 0
    without = json.loads(capsys.readouterr().out)[0]["top"][0]
    assert with_t["label"] == without["label"] and with_t["prob"] != pytest.approx(without["prob"], abs=1e-4)


def test_export_divides_by_the_temperature_in_the_graph(calibrated, tmp_path):
    pytest.importorskip("onnxruntime")
    from convlab.compress.export import export_onnx
    from convlab.compress.load import load_variant

    run, _ = calibrated
    path = export_onnx(run, tmp_path / "m.onnx", console=Console(file=io.StringIO()))
    exported = load_variant(path)
    assert exported.preprocess.temperature is None  # applied inside the graph, not twice
    images = run.test_data().images[:16]
    np.testing.assert_allclose(exported.predict_logits(images), run.predict_logits(images) /
                               np.float32(run.preprocess.temperature), atol=1e-4)
    np.testing.assert_allclose(exported.predict_arrays(images), run.predict_arrays(images), atol=1e-5)


def test_calibrate_without_validation_rows_is_refused(tmp_path, capsys):
    capsys.readouterr()
    code = main(["train", "--data", "digits", "--calibrate", "temperature", "--val-fraction", "0", "--epochs", "1",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--calibrate temperature fits on the validation rows" in err and "--val-fraction" in err


def test_a_detection_run_refuses_calibrate_by_name(tmp_path, capsys):
    capsys.readouterr()
    code = main(["train", "--data", "shapes", "--calibrate", "temperature", "--epochs", "1", "--out",
                 str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "--calibrate temperature is not available for detect runs" in err
