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


def test_predict_prints_scores_and_boxes_with_every_digit_float32_holds():
    """Rounded further, scores of different images tie and COCOeval ranks them in image order: predict's
    JSON would score another mAP than eval (by 1e-3 on the shapes run)."""
    from convlab.detection.run import shortest

    values = np.random.default_rng(0).random(10_000, dtype=np.float32) * np.float32(64)
    printed = [shortest(v) for v in values]
    assert np.array_equal(np.array(printed, dtype=np.float32), values)  # reads back as the same float32
    assert shortest(np.float32(0.5552005171775818)) == 0.5552005 and shortest(12.8) == 12.8


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

    from convlab.compress.export_detection import pair_detections
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
        tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255)
        with torch.inference_mode():
            expected = model([tensor])[0]
        expected = [expected[name].numpy() for name in ("boxes", "labels", "scores")]
        got = session.run(["boxes", "labels", "scores"], {"image": tensor.numpy()})
        pairs = pair_detections(expected, got, 1e-3)  # float noise may swap two near-tied boxes' places
        assert pairs is not None, "a box of one runtime has no partner in the other"
        mine, theirs = pairs
        assert len(mine) >= len(expected[2]) - 1  # a box may fall on either side of the cut, no more
        np.testing.assert_array_equal(got[1][theirs], expected[1][mine])
        np.testing.assert_allclose(got[0][theirs], expected[0][mine], atol=1e-3)
        np.testing.assert_allclose(got[2][theirs], expected[2][mine], atol=1e-4)
    code, _, err = run_cli(capsys, "eval", str(out))
    assert_one_line_error(code, err, "exported detect model", "pass the run folder")


def _detections(*rows):
    """(boxes, labels, scores) arrays from (x1, y1, x2, y2, label, score) rows, as a detector gives them."""
    table = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return table[:, :4].astype(np.float32), table[:, 4].astype(np.int64), table[:, 5].astype(np.float32)


def test_detections_are_compared_as_boxes_not_as_positions_in_the_list():
    """Two runtimes' scores differ by float noise: near-tied boxes may swap places, a box at the cut may be
    kept by one only; a box that moved, changed class or is missing above the cut is still a difference."""
    from convlab.compress.export_detection import detections_difference, pair_detections

    first, tied, other_tied, last = (10, 10, 20, 20, 0, 0.9), (30, 30, 40, 40, 1, 0.5000001), (5, 5, 9, 9, 1, 0.5), \
        (50, 50, 60, 60, 2, 0.1)
    torch_boxes = _detections(first, tied, other_tied, last)
    swapped = _detections(first, other_tied[:5] + (0.5000002,), tied[:5] + (0.5,), last)
    assert detections_difference(torch_boxes, swapped, 1e-3) <= 1e-6
    mine, theirs = pair_detections(torch_boxes, swapped, 1e-3)
    assert sorted(zip(mine.tolist(), theirs.tolist())) == [(0, 0), (1, 2), (2, 1), (3, 3)]
    another_at_the_cut = _detections(first, tied, other_tied, (0, 0, 8, 8, 0, 0.1000001))
    assert detections_difference(torch_boxes, another_at_the_cut, 1e-3) <= 1e-6
    moved = _detections((10, 10, 20, 20.01, 0, 0.9), tied, other_tied, last)
    assert detections_difference(torch_boxes, moved, 1e-3) == pytest.approx(0.01, abs=1e-5)
    relabelled = _detections((10, 10, 20, 20, 2, 0.9), tied, other_tied, last)
    missing = _detections(tied, other_tied, last)
    with_nan = _detections((10, 10, 20, np.nan, 0, 0.9), tied, other_tied, last)
    for other in (relabelled, missing, with_nan):
        assert detections_difference(torch_boxes, other, 1e-3) == float("inf")
    assert detections_difference(_detections(), _detections(), 1e-3) == 0.0


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
