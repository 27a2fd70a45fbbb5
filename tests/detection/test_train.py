"""Detection through the one pipeline: the shapes preset learns, the run folder is a detection run's, exact resume,
bad boxes are named, and what a detection run cannot do is refused by name."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from convlab.detection.synthetic import make_shapes
from convlab.layout import BOXES, CHECKPOINTS, CONFUSION, CURVES, PR_CURVES
from convlab.pipeline import train
from convlab.tasks import load_run
from cli_output import assert_one_line_error, run_cli


def _coco(folder, items, classes, boxes_of=lambda item: item.boxes):
    """Write `items` (train and test splits in one file each) as COCO JSON -> the folder for coco:FOLDER."""
    (folder / "annotations").mkdir(parents=True)
    for split, group in items.items():
        images, annotations = [], []
        for item in group:
            images.append({"id": item.image_id, "file_name": str(item.path.relative_to(folder / "images")),
                           "width": item.width, "height": item.height})
            boxes = boxes_of(item)
            labels = np.concatenate([item.labels, np.zeros(len(boxes) - len(item.labels), np.int64)])
            for box, label in zip(boxes, labels):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append({"id": len(annotations) + 1, "image_id": item.image_id, "category_id": int(label) + 1,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(classes)]
        (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
    return folder


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes-run") / "run"
    home = tmp_path_factory.mktemp("home")
    run = train(data="shapes", data_dir=str(home), out=str(out), quiet=True, threads=1)
    return run


@pytest.mark.slow
def test_the_small_preset_reaches_ap50_of_08_on_shapes(shapes_run):
    metrics = shapes_run.metrics
    assert metrics["map50"] >= 0.8, metrics
    assert 0 < metrics["map"] <= metrics["map50"]
    assert set(metrics["per_class_ap"]) == {"square", "disc", "triangle"}
    assert metrics["num_images"] == 48


@pytest.mark.slow
def test_a_detection_run_folder_holds_its_task_figures_and_monitor(shapes_run):
    path = shapes_run.path
    for name in (CURVES, PR_CURVES, CONFUSION, BOXES):
        assert (path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "task: detect" in (path / "config.yaml").read_text()
    header = (path / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_map,val_map50,lr,seconds,images_per_second"
    with safe_open(str(path / CHECKPOINTS / "best.safetensors"), "pt") as best:
        assert "val_map" in best.metadata()  # the best epoch is picked by mAP, not accuracy
    loaded = load_run(path)
    assert loaded.evaluate()["map"] == pytest.approx(shapes_run.metrics["map"], abs=1e-6)
    found = loaded.predict(shapes_run.evaluated[0][1].path)[0]["boxes"]
    assert found and {b["label"] for b in found} <= {"square", "disc", "triangle"}


@pytest.mark.slow
def test_resuming_a_detection_run_gives_the_uninterrupted_run(tmp_path):
    items = make_shapes(tmp_path / "images", 24, 8, seed=3)
    data = f"coco:{_coco(tmp_path, {'train': items.train, 'val': items.test}, items.classes)}"
    common = dict(data=data, model="tiny-detector", image_size=64, optimizer="adam", lr=1e-3, schedule="none",
                  batch_size=8,
                  augment="light", quiet=True, threads=1, deterministic=True)
    whole = train(epochs=2, out=str(tmp_path / "whole"), **common)
    train(epochs=1, out=str(tmp_path / "part"), **common)
    resumed = train(resume=str(tmp_path / "part"), epochs=2, quiet=True)
    assert resumed.metrics["map"] == whole.metrics["map"]
    rows = [(tmp_path / name / "metrics.csv").read_text().splitlines() for name in ("whole", "part")]
    strip = [[",".join(line.split(",")[:4]) for line in table] for table in rows]  # no timings
    assert strip[0] == strip[1]


def test_bad_boxes_are_named_counted_and_never_reach_the_loss(tmp_path, capsys):
    items = make_shapes(tmp_path / "images", 8, 4, seed=1, negatives=0.0)
    bad = {id(items.train[0]): np.array([[5, 5, 5, 20], [np.nan, 1, 9, 9]], dtype=np.float32)}
    folder = _coco(tmp_path, {"train": items.train, "val": items.test}, items.classes,
                   lambda item: np.concatenate([item.boxes, bad.get(id(item), np.zeros((0, 4), np.float32))]))
    code, out, err = run_cli(capsys, "train", "--data", f"coco:{folder}", "--model", "tiny-detector",
                             "--image-size", "64", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0",
                             "--out", str(tmp_path / "run"), "--quiet", "--threads", "1")
    assert code == 0, err
    assert "instances_train.json" in out and "2 boxes dropped" in out
    issues = json.loads((tmp_path / "run" / "data_issues.json").read_text())
    assert issues["boxes_dropped"] == 2 and {b["index"] for b in issues["boxes"]} == {len(items.train[0]),
                                                                                   len(items.train[0]) + 1}
    loss = float((tmp_path / "run" / "metrics.csv").read_text().splitlines()[1].split(",")[1])
    assert np.isfinite(loss)


@pytest.mark.parametrize("flags, fragment", [
    (["--engine", "scratch"], "--engine scratch is not available for detect runs"),
    (["--tensorboard"], "--tensorboard is not available for detect runs"),
    (["--task", "classify"], "--task classify does not fit --data shapes"),
])
def test_what_a_detection_run_cannot_do_is_refused_by_name(tmp_path, capsys, flags, fragment):
    code, _, err = run_cli(capsys, "train", "--data", "shapes", "--out", str(tmp_path / "run"), *flags)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_the_data_names_the_task_and_a_classifier_stays_a_classifier(tmp_path, capsys):
    from convlab import config as cfg
    from convlab.pipeline import recipe_for
    from convlab.tasks import task_of

    for data, task in (("digits", "classify"), ("shapes", "detect"), ("coco:x.json", "detect"),
                       ("yolo:data.yaml", "detect"), ("voc:DIR", "detect"), ("imagefolder:DIR", "classify")):
        conf, origin = cfg.resolve({"data": data}, recipe_for=recipe_for)
        assert (conf.data.task, origin["task"], task_of(conf).name) == (task, "recipe", task)
