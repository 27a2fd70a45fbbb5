"""Multi-label runs end to end: a CSV with several labels per row trains a sigmoid model whose thresholds are
fitted on validation, stored in preprocess.json and read back by predict, eval and export."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from convlab import load_run
from convlab.cli import main
from convlab.evaluate.multilabel import f1_thresholds, multilabel_metrics
from convlab.tasks.multilabel import MIN_POSITIVES

pytestmark = pytest.mark.slow


def test_a_csv_with_label_lists_trains_a_multilabel_model(multilabel_run):
    run = multilabel_run
    assert run.task == "multilabel" and run.config.data.task == "multilabel"  # inferred from the rows
    assert run.classes == ["blue", "green", "red"]
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["mean_ap"] > 0.8  # colour squares are easy: far above chance (about the label frequency)
    assert set(metrics["per_label"]) == {"blue", "green", "red"}
    assert 0 <= metrics["hamming_loss"] <= 1 and 0 <= metrics["ece"] <= 1
    history = (run.path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val_mean_ap" in history and "val_micro_f1" in history
    assert (run.path / "reliability.png").stat().st_size > 0 and (run.path / "curves.png").is_file()


def test_thresholds_are_the_validation_rows_f1_optimum(multilabel_run):
    from convlab.tasks import task_of
    from convlab.tasks.classify import validation_set
    from convlab.data.run_data import load_run_data

    run = load_run(multilabel_run.path)
    stored = json.loads((run.path / "preprocess.json").read_text())["thresholds"]
    data = load_run_data(run.config)
    val = validation_set(data)
    probs = run.predict_arrays(val.images)
    assert val.labels.sum(axis=0).min() >= MIN_POSITIVES  # every label's threshold is fitted here
    np.testing.assert_allclose(stored, f1_thresholds(val.labels, probs), atol=1e-6)
    assert task_of(run.config).name == "multilabel"


def test_eval_scores_the_test_split_with_the_stored_thresholds(multilabel_run, capsys):
    run = load_run(multilabel_run.path)
    test = run.test_data()
    expected = multilabel_metrics(test.labels, run.predict_arrays(test.images), run.classes, run.thresholds)
    capsys.readouterr()
    assert main(["eval", str(run.path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for key in ("mean_ap", "micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"):
        assert got[key] == pytest.approx(expected[key])
    assert got["per_label"]["red"]["threshold"] == pytest.approx(run.thresholds[2])
    assert main(["eval", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "mean AP" in out and "threshold" in out and "calibration: ECE" in out


def test_predict_reads_the_thresholds_back(multilabel_run, tmp_path, capsys):
    folder = shutil.copytree(multilabel_run.path, tmp_path / "run")
    image = _any_image(multilabel_run)
    preprocess = json.loads((folder / "preprocess.json").read_text())
    preprocess["thresholds"] = [0.0, 1.0, 0.0]  # blue and red always, green never
    (folder / "preprocess.json").write_text(json.dumps(preprocess))
    capsys.readouterr()
    assert main(["predict", str(folder), str(image), "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert sorted(label["label"] for label in result["labels"]) == ["blue", "red"]
    assert {label["threshold"] for label in result["labels"]} == {0.0}
    assert len(result["top"]) == 3  # every label, most probable first, whatever the thresholds
    assert main(["predict", str(folder), str(image)]) == 0
    line = capsys.readouterr().out
    assert "blue" in line and "red" in line and "green" not in line


def _any_image(run):
    """The first generated image of the run's CSV (listed in it, so the run trained or tested on it)."""
    return Path(run.config.data.name.partition(":")[2]).parent / "img000.png"


def test_multi_label_flag_on_a_single_label_csv(tmp_path, make_image_folder):
    from convlab import train

    make_image_folder(tmp_path / "images", per_class=8)
    rows = ["path,label"] + [f"{p.relative_to(tmp_path / 'images')},{p.parent.name}"
                             for p in sorted((tmp_path / "images").rglob("*.png"))]
    (tmp_path / "one.csv").write_text("\n".join(rows) + "\n")
    data = f"csv:{tmp_path / 'one.csv'},{tmp_path / 'images'}"
    single = train(data=data, epochs=1, image_size=12, threads=1, quiet=True, out=str(tmp_path / "single"))
    assert single.task == "classify" and "accuracy" in single.metrics and "ece" in single.metrics
    assert main(["train", "--data", data, "--multi-label", "--epochs", "1", "--image-size", "12", "--threads",
                 "1", "--quiet", "--out", str(tmp_path / "multi")]) == 0
    multi = load_run(tmp_path / "multi")
    assert multi.task == "multilabel" and len(multi.thresholds) == 3


@pytest.mark.parametrize("flags, named", [(["--mixup", "0.2"], "--mixup is not available for multilabel runs"),
                                          (["--sampler", "balanced"], "--sampler balanced is not available"),
                                          (["--classes", "red,blue"], "--classes is not available")])
def test_what_a_multilabel_run_cannot_do_is_refused_by_name(multilabel_run, tmp_path, capsys, flags, named):
    capsys.readouterr()
    code = main(["train", "--data", multilabel_run.config.data.name, "--epochs", "1", "--out", str(tmp_path / "x"),
                 *flags])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "Traceback" not in err
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_distilling_from_a_multilabel_teacher_is_refused(multilabel_run, tmp_path, capsys):
    capsys.readouterr()
    code = main(["distill", "--teacher", str(multilabel_run.path), "--data", multilabel_run.config.data.name,
                 "--epochs", "1", "--out", str(tmp_path / "student")])
    err = capsys.readouterr().err
    assert code == 2 and "distill --teacher is not available for multilabel runs" in err


def test_export_keeps_sigmoids_and_thresholds(multilabel_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    folder = shutil.copytree(multilabel_run.path, tmp_path / "run")
    assert main(["export", str(folder), "--out", str(tmp_path / "m.onnx")]) == 0
    from convlab.compress.load import load_variant

    exported, run = load_variant(tmp_path / "m.onnx"), load_run(folder)
    assert exported.task == "multilabel" and exported.thresholds.tolist() == run.thresholds.tolist()
    test = run.test_data()
    np.testing.assert_allclose(exported.predict_arrays(test.images), run.predict_arrays(test.images), atol=1e-5)


def test_gradcam_and_attribute_explain_the_label_named_by_target(multilabel_run, tmp_path, capsys):
    image = _any_image(multilabel_run)
    capsys.readouterr()
    code = main(["gradcam", str(multilabel_run.path), str(image), "--out", str(tmp_path / "cam")])
    err = capsys.readouterr().err
    assert code == 2 and "is multi-label" in err and "--target LABEL" in err and "blue, green, red" in err
    assert main(["gradcam", str(multilabel_run.path), str(image), "--target", "green", "--out",
                 str(tmp_path / "cam")]) == 0
    assert (tmp_path / "cam" / "img000-gradcam.png").is_file()
    pytest.importorskip("captum")
    from convlab.insight.attribution import attribute

    run = load_run(multilabel_run.path)
    result = attribute(run, [image], "saliency", "red", log=lambda line: None)
    assert result.targets.tolist() == [2]
    expected = run.probabilities(run.predict_logits(result.images))
    np.testing.assert_allclose(result.probs, expected, atol=1e-5)  # sigmoids, not a softmax over the labels
