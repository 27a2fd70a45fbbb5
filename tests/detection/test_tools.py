"""Every tool on a detection run: predict, eval, report, export, compare and tune know the task; the commands a
detector cannot do yet are refused by name (exit 2, one line)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from cli_output import assert_one_line_error, run_cli
from convlab import config as cfg


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """A tiny-detector run on the generated shapes (a few seconds on a CPU), shared by the tests that read it."""
    import torch
    from rich.console import Console

    from convlab import train

    root = tmp_path_factory.mktemp("shapes")
    (root / "data").mkdir()
    threads = torch.get_num_threads()
    try:
        run = train(data="shapes", data_dir=str(root / "data"), epochs=4, threads=1, out=str(root / "run"),
                    quiet=True, console=Console(file=io.StringIO()))
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture
def config_only_run(tmp_path):
    """A folder with a detection run's config.yaml alone: refusals come before anything else is read."""
    conf, _ = cfg.resolve({"data": "shapes"})
    cfg.save_config(conf, tmp_path / "config.yaml")
    return tmp_path


def _test_paths(run) -> list[str]:
    items, _ = run.test_items()
    return [str(item.path) for item in items]


# -- refused by name ------------------------------------------------------------------------------------------
REFUSED = [
    (["gradcam", "RUN", "x.png", "--out", "OUT"], "gradcam"),
    (["attribute", "RUN", "x.png"], "attribute"),
    (["features", "RUN", "x.png", "--out", "OUT"], "features"),
    (["compress", "prune", "RUN", "--out", "OUT"], "prune"),
    (["compress", "quantize", "RUN", "--out", "OUT"], "quantize"),
    (["distill", "--teacher", "RUN", "--out", "OUT"], "distill --teacher"),
    (["report", "RUN", "--method", "gradcam"], "report --method"),
]


@pytest.mark.parametrize("argv, what", REFUSED, ids=[what for _, what in REFUSED])
def test_commands_a_detector_cannot_do_are_refused_by_name(config_only_run, tmp_path, capsys, argv, what):
    argv = [str(config_only_run) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, f"{config_only_run} is a detect run", f"{what} is not available for detect "
                                                                           f"runs yet")
    assert not (tmp_path / "out").exists()


def test_predict_refuses_a_detectors_flag_for_a_classifier(digits_run, capsys):
    code, _, err = run_cli(capsys, "predict", str(digits_run.path), "x.png", "--conf", "0.5")
    assert_one_line_error(code, err, "--conf is for detect runs", "is a classify run", "--top-k")


# -- tune scores detection trials by the task's monitor ------------------------------------------------------
def test_tune_reports_the_tasks_monitor_to_the_trial():
    from convlab.insight.tune import Objective, ReportToTrial

    objective = Objective.of({"data": "shapes"})
    assert (objective.monitor, objective.test_metric, objective.words) == ("val_map", "map", "validation mAP")
    assert Objective.of({"data": "digits"}).monitor == "val_accuracy"

    class Trial:
        def __init__(self):
            self.reported = []

        def report(self, value, step):
            self.reported.append((value, step))

        def should_prune(self):
            return False

    class State:
        epoch = 1

    trial = Trial()
    callback = ReportToTrial(trial, objective)
    callback.on_epoch_end(State(), {"val_accuracy": 0.9, "val_map": 0.25})
    callback.on_epoch_end(State(), {"val_map": 0.2})
    assert trial.reported == [(0.25, 1), (0.2, 1)] and callback.best == 0.25


# -- on a trained detector ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_predict_json_rescored_with_pycocotools_gives_the_eval_map(shapes_run, capsys):
    """The Done-when check: every box predict gives (--conf 0, --iou 1: no threshold or NMS beyond the
    detector's own, what eval scores), as COCO results, scored by pycocotools against the test split."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from convlab.detection.metrics import image_ids, to_coco_ground_truth

    code, out, _ = run_cli(capsys, "eval", str(shapes_run.path), "--json")
    assert code == 0
    metrics = json.loads(out)
    items, classes = shapes_run.test_items()
    code, out, _ = run_cli(capsys, "predict", str(shapes_run.path), *_test_paths(shapes_run), "--json", "--conf",
                           "0", "--iou", "1")
    assert code == 0
    results = json.loads(out)
    assert [r["path"] for r in results] == _test_paths(shapes_run)
    detections = [{"image_id": image_id, "category_id": classes.index(box["label"]) + 1, "score": box["score"],
                   "bbox": [box["box"][0], box["box"][1], box["box"][2] - box["box"][0],
                            box["box"][3] - box["box"][1]]}
                  for image_id, result in zip(image_ids(items), results) for box in result["boxes"]]
    assert detections, "the detector found no box at all"
    truth = COCO()
    truth.dataset = to_coco_ground_truth(items, classes)
    truth.createIndex()
    evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    capsys.readouterr()
    assert metrics["map"] > 0.1  # it learned something: the comparison is not of two zeros
    assert evaluation.stats[0] == pytest.approx(metrics["map"], abs=1e-4)
    assert evaluation.stats[1] == pytest.approx(metrics["map50"], abs=1e-4)


@pytest.mark.slow
def test_eval_prints_the_coco_metrics_and_per_class_ap(shapes_run, capsys):
    code, out, _ = run_cli(capsys, "eval", str(shapes_run.path))
    assert code == 0
    head = out.splitlines()[0]
    assert f"mAP@[.5:.95] {shapes_run.metrics['map']:.4f}" in head and "AP50" in head and "48 images" in head
    assert "AR@100" in out and "AP small/medium/large" in out
    for name in ("square", "disc", "triangle"):
        assert name in out


@pytest.mark.slow
def test_predict_prints_a_table_and_saves_the_images_with_boxes(shapes_run, tmp_path, capsys):
    paths = _test_paths(shapes_run)[:2]
    code, out, err = run_cli(capsys, "predict", str(shapes_run.path), *paths, "--save", str(tmp_path / "drawn"))
    assert code == 0, err
    assert "class" in out and "score" in out and ("square" in out or "disc" in out or "triangle" in out)
    for path in paths:
        drawn = tmp_path / "drawn" / (path.rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".png")
        original = np.asarray(Image.open(path).convert("RGB"))
        saved = np.asarray(Image.open(drawn).convert("RGB"))
        assert saved.shape == original.shape and (saved != original).any()  # the boxes are drawn on it
    code, _, err = run_cli(capsys, "predict", str(shapes_run.path), paths[0], "--top-k", "3")
    assert_one_line_error(code, err, "--top-k is for classify and multilabel runs", "is a detect run")
    code, _, err = run_cli(capsys, "predict", str(shapes_run.path), paths[0], "--conf", "1.5")
    assert_one_line_error(code, err, "--conf must be between 0 and 1, got 1.5")


@pytest.mark.slow
def test_report_of_a_detector_has_its_metrics_and_worst_images(shapes_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    code, _, err = run_cli(capsys, "report", str(shapes_run.path), "--out", str(out))
    assert code == 0, err
    page = out.read_text()
    assert page.index("Test metrics") < page.index("Config")  # results first
    assert f"<b>{shapes_run.metrics['map']:.4f}</b>" in page
    assert "Precision and recall at IoU 0.5" in page and "Confusion matrix at IoU 0.5" in page
    assert "Images with the most missed and false boxes" in page
    assert page.count("<img") >= 3 and "Attribution" not in page


@pytest.mark.slow
def test_export_onnx_agrees_with_torch_on_test_images(shapes_run, tmp_path, capsys):
    import onnxruntime
    import torch

    from convlab.detection.batches import resize_longer
    from convlab.detection.run import read_rgb

    out = tmp_path / "shapes.onnx"
    code, printed, err = run_cli(capsys, "export", str(shapes_run.path), "--out", str(out))
    assert code == 0, err
    assert "onnxruntime matches PyTorch" in printed
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["convlab.labels"]) == shapes_run.classes and meta["convlab.task"] == "detect"
    model = shapes_run.model.cpu().eval()
    for path in _test_paths(shapes_run)[-3:]:  # beyond the images the export checked itself on
        image, _ = resize_longer(read_rgb(path), shapes_run.preprocess.side)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)
        with torch.inference_mode():
            expected = model([tensor])[0]
        boxes, labels, scores = session.run(["boxes", "labels", "scores"], {"image": tensor.numpy()})
        np.testing.assert_array_equal(labels, expected["labels"].numpy())
        np.testing.assert_allclose(boxes, expected["boxes"].numpy(), atol=1e-3)
        np.testing.assert_allclose(scores, expected["scores"].numpy(), atol=1e-4)
    code, _, err = run_cli(capsys, "eval", str(out))
    assert_one_line_error(code, err, "exported detect model", "pass the run folder")


@pytest.mark.slow
def test_compare_scores_detectors_by_map_and_keeps_tasks_apart(shapes_run, digits_run, tmp_path):
    from convlab.compress.compare import compare, comparison_table
    from convlab.errors import ConvlabError

    rows = compare([shapes_run.path], latency_seconds=0.01)
    assert rows[0]["metric"] == "map" and rows[0]["map"] == pytest.approx(shapes_run.metrics["map"], abs=1e-9)
    assert rows[0]["test_images"] == 48 and rows[0]["ms_per_image_batch_1"] > 0
    assert [column.header for column in comparison_table(rows).columns][6] == "mAP"
    with pytest.raises(ConvlabError, match="compare ranks runs of one task"):
        compare([digits_run.path, shapes_run.path], latency_seconds=0.01)


@pytest.mark.slow
def test_tune_scores_detection_trials_by_validation_map(tmp_path):
    import csv

    import torch
    from rich.console import Console

    from convlab.insight.tune import tune

    (tmp_path / "data").mkdir()
    threads = torch.get_num_threads()
    try:
        result = tune(tmp_path / "study", ["lr=0.001,0.003"], trials=2, search="grid", data="shapes",
                      data_dir=str(tmp_path / "data"), epochs=2, threads=1, console=Console(file=io.StringIO()))
    finally:
        torch.set_num_threads(threads)
    for trial in result.study.trials:
        run_dir = tmp_path / "study" / "trials" / f"trial-{trial.number:04d}"
        with open(run_dir / "metrics.csv") as handle:
            best_val_map = max(float(row["val_map"]) for row in csv.DictReader(handle))
        assert trial.value == pytest.approx(best_val_map)
        assert trial.user_attrs["test_map"] == json.loads((run_dir / "metrics.json").read_text())["map"]
    assert "validation mAP" in (tmp_path / "study" / "best.yaml").read_text()
