"""Every tool on a run trained with --classes 5,6,7,8,9: they all read the run's data as its config defines it
(one definition, data/run_data.py), so none of them meets the five classes the run does not know."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convlab import load_run, train
from convlab.cli import main

SUBSET = ["5", "6", "7", "8", "9"]


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("subset") / "sub"
    return train(data="digits", model="small-cnn", classes=",".join(SUBSET), epochs=3, out=str(out), quiet=True)


@pytest.fixture(scope="module")
def subset_image(subset_run, tmp_path_factory):
    """One test image of class 7 as a PNG file."""
    test = subset_run.test_data()
    index = int(np.flatnonzero(test.labels == SUBSET.index("7"))[0])
    path = tmp_path_factory.mktemp("images") / "seven.png"
    Image.fromarray(test.images[index, 0]).save(path)
    return path


def test_the_run_knows_only_its_classes(subset_run):
    assert subset_run.classes == SUBSET
    test = subset_run.test_data()
    assert len(test) == 180 and set(test.labels.tolist()) == set(range(5))  # 36 of each of the 5 digits
    assert subset_run.metrics["num_samples"] == 180 and subset_run.metrics["accuracy"] > 0.8


def test_eval(subset_run, capsys):
    assert main(["eval", str(subset_run.path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["num_samples"] == 180
    assert metrics["accuracy"] == pytest.approx(subset_run.metrics["accuracy"])
    assert list(metrics["per_class"]) == SUBSET


def test_eval_on_data_with_classes_the_run_does_not_know_names_them(subset_run, capsys):
    assert main(["eval", str(subset_run.path), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert f"--data digits has classes run {subset_run.path} does not know: 0, 1, 2, 3, 4" in err
    assert "knows 5, 6, 7, 8, 9" in err and "Traceback" not in err


def test_predict_labels_are_the_run_classes(subset_run, subset_image, capsys):
    assert main(["predict", str(subset_run.path), str(subset_image), "--json", "--top-k", "5"]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    assert sorted(t["label"] for t in result["top"]) == SUBSET
    assert result["top"][0]["label"] == "7"


def test_report(subset_run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(subset_run.path), "--out", str(out)]) == 0
    page = out.read_text()
    assert "and 180 test images of 1x8x8, 5 classes" in page  # the dataset section: the run's five classes
    assert "Most confident mistakes" in page and "the dataset could not be loaded" not in page
    assert "data.classes</th><td>5,6,7,8,9" in page and "finetune.source" not in page  # as config.yaml has it


def test_gradcam_and_features(subset_run, subset_image, tmp_path, capsys):
    assert main(["gradcam", str(subset_run.path), str(subset_image), "--out", str(tmp_path / "cam")]) == 0
    assert main(["gradcam", str(subset_run.path), str(subset_image), "--class", "9",
                 "--out", str(tmp_path / "cam9")]) == 0
    assert main(["features", str(subset_run.path), str(subset_image), "--out", str(tmp_path / "maps")]) == 0
    assert list((tmp_path / "cam").glob("*.png")) and list((tmp_path / "cam9").glob("*.png"))
    assert list((tmp_path / "maps").glob("*.png"))
    assert main(["gradcam", str(subset_run.path), str(subset_image), "--class", "3",
                 "--out", str(tmp_path / "cam3")]) == 2  # 3 is not one of the run's classes
    assert "'3' is not a class of run" in capsys.readouterr().err


@pytest.mark.slow
def test_prune_quantize_compare(subset_run, tmp_path, capsys):
    pruned, dynamic, static = tmp_path / "pruned", tmp_path / "int8-dynamic", tmp_path / "int8-static"
    assert main(["compress", "prune", str(subset_run.path), "--amount", "0.5", "--finetune-epochs", "1",
                 "--out", str(pruned), "--quiet"]) == 0
    assert main(["compress", "quantize", str(subset_run.path), "--mode", "dynamic", "--out", str(dynamic)]) == 0
    assert main(["compress", "quantize", str(subset_run.path), "--mode", "static", "--calibration-images", "64",
                 "--out", str(static)]) == 0
    for folder in (pruned, dynamic, static):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["num_samples"] == 180 and metrics["accuracy"] > 0.7
        assert json.loads((folder / "labels.json").read_text()) == SUBSET
    table = tmp_path / "rows.json"
    assert main(["compare", str(subset_run.path), str(pruned), str(dynamic), str(static), "--json", str(table),
                 "--chart", str(tmp_path / "chart.png"), "--seconds", "0.01"]) == 0
    rows = json.loads(table.read_text())
    assert [row["test_images"] for row in rows] == [180] * 4


@pytest.mark.slow
def test_distill_from_a_subset_teacher_takes_its_classes(subset_run, tmp_path):
    from convlab.compress import distill

    student = distill(subset_run.path, student="tiny-cnn", epochs=2, out=str(tmp_path / "student"), quiet=True)
    assert student.classes == SUBSET and student.config.data.classes == "5,6,7,8,9"
    assert student.metrics["num_samples"] == 180
    assert student.metrics["distillation"]["teacher_accuracy"] == pytest.approx(subset_run.metrics["accuracy"])


@pytest.mark.slow
def test_export_checks_on_the_runs_own_test_images(subset_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "sub.onnx"
    assert main(["export", str(subset_run.path), "--out", str(out)]) == 0
    assert "on random inputs at batch 1 and 5 and 64 test images of the run" in capsys.readouterr().out
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == 180


def test_finetune_from_a_subset_run_on_other_classes(subset_run, tmp_path):
    from convlab import finetune

    tuned = finetune(subset_run.path, data="digits", classes="0,1,2", train_per_class=20, epochs=2,
                     out=str(tmp_path / "ft"), quiet=True)
    test = tuned.test_data()
    assert tuned.classes == ["0", "1", "2"] and set(test.labels.tolist()) == {0, 1, 2}
    assert tuned.metrics["num_samples"] == len(test) == 107  # the digits test split holds 36 + 36 + 35 of them
    assert load_run(tuned.path).evaluate()["num_samples"] == 107
