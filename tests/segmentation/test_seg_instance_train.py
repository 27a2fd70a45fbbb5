"""Instance segmentation through the one pipeline: the tiny Mask R-CNN learns generated shapes, the run folder is
an instance run's (mask mAP picks the best epoch), it loads and predicts masks, and a resumed run is the
uninterrupted one."""
from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from convlab.layout import CHECKPOINTS
from convlab.pipeline import train
from convlab.segmentation.synthetic import make_shape_masks
from convlab.tasks import load_run


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return train(data="shape-instances", data_dir=str(home), out=str(tmp_path_factory.mktemp("run") / "run"),
                 quiet=True, threads=1)


@pytest.mark.slow
def test_the_tiny_mask_rcnn_learns_the_shapes_masks(shapes_run):
    metrics = shapes_run.metrics
    assert metrics["mask_map50"] >= 0.75, metrics  # 0.94 measured (8 epochs, seed 0); chance is near 0
    assert 0 < metrics["mask_map"] <= metrics["mask_map50"] and metrics["box_map"] > 0
    assert set(metrics["per_class_ap"]) == {"square", "disc", "triangle"} and metrics["num_images"] == 48


@pytest.mark.slow
def test_an_instance_run_folder_is_picked_by_mask_map_and_loads_to_predict_masks(shapes_run):
    path = shapes_run.path
    assert "task: instance" in (path / "config.yaml").read_text()
    header = (path / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_mask_map,val_box_map,lr,seconds,images_per_second"
    with safe_open(str(path / CHECKPOINTS / "best.safetensors"), "pt") as best:
        assert "val_mask_map" in best.metadata()
    loaded = load_run(path)
    assert type(loaded).__name__ == "InstanceRun"
    assert loaded.evaluate()["mask_map"] == pytest.approx(shapes_run.metrics["mask_map"], abs=1e-6)
    item = shapes_run.evaluated[0][0]
    objects = loaded.predict(item.path)[0]["objects"]
    assert objects and {o["label"] for o in objects} <= {"square", "disc", "triangle"}
    best = objects[0]
    assert best["mask"].shape == (64, 64) and best["mask"].dtype == bool
    ious = [(best["mask"] & truth).sum() / (best["mask"] | truth).sum() for truth in item.masks]
    assert max(ious) > 0.5  # the best-scoring mask lies on a true object


def _coco(folder, found):
    """The generated shapes' instances as COCO RLE annotations (one file per split) -> folder for coco:FOLDER."""
    from pycocotools import mask as coco_mask

    (folder / "annotations").mkdir()
    for split, items in (("train", found.train), ("val", found.test)):
        images, annotations = [], []
        for item in items:
            images.append({"id": item.image_id, "file_name": str(item.path.relative_to(folder)), "width": item.width,
                           "height": item.height})
            for mask, label in zip(item.instances, item.labels):
                rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
                annotations.append({"id": len(annotations) + 1, "image_id": item.image_id, "iscrowd": 0,
                                    "category_id": int(label), "segmentation": {**rle, "counts": rle["counts"].decode()},
                                    "bbox": coco_mask.toBbox(rle).tolist(), "area": float(mask.sum())})
        categories = [{"id": k, "name": name} for k, name in enumerate(found.classes) if k]
        (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
    return folder


@pytest.mark.slow
def test_resuming_an_instance_run_gives_the_uninterrupted_run(tmp_path):
    data = f"coco:{_coco(tmp_path, make_shape_masks(tmp_path, 24, 8, seed=3))}"
    common = dict(data=data, task="instance", model="tiny-maskrcnn", image_size=64, optimizer="adam", lr=1e-3,
                  schedule="none", batch_size=8, augment="light", quiet=True, threads=1, deterministic=True)
    whole = train(epochs=2, out=str(tmp_path / "whole"), **common)
    train(epochs=1, out=str(tmp_path / "part"), **common)
    resumed = train(resume=str(tmp_path / "part"), epochs=2, quiet=True)
    assert resumed.metrics["mask_map"] == whole.metrics["mask_map"]
    rows = [(tmp_path / name / "metrics.csv").read_text().splitlines() for name in ("whole", "part")]
    strip = [[",".join(line.split(",")[:5]) for line in table] for table in rows]  # no timings
    assert strip[0] == strip[1]


@pytest.mark.slow
def test_a_fine_tune_builds_a_mask_rcnn_on_a_classification_run(digits_run):
    from convlab import config as cfg
    from convlab.finetune import STARTS
    from convlab.pipeline import recipe_for

    conf, origin = cfg.resolve({"data": "shape-instances", "source": str(digits_run.path)}, recipe_for=recipe_for)
    start = STARTS["instance"](conf, origin)
    model = start.build(3, 3, (64, 64), 0.0)
    assert conf.model.name == "maskrcnn" and start.freeze
    assert model.backbone_spec.startswith("model:tiny-cnn@") and type(model.model).__name__ == "MaskRCNN"
    assert model.model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4  # 3 classes and background


@pytest.mark.slow
def test_eval_prints_mask_map_and_predict_on_the_command_line_is_refused_by_name(shapes_run, capsys):
    from cli_output import assert_one_line_error, run_cli

    code, out, _ = run_cli(capsys, "eval", str(shapes_run.path), "--json")
    assert code == 0 and json.loads(out)["mask_map"] == pytest.approx(shapes_run.metrics["mask_map"], abs=1e-6)
    code, out, _ = run_cli(capsys, "eval", str(shapes_run.path))
    assert code == 0 and f"mask mAP@[.5:.95] {shapes_run.metrics['mask_map']:.4f}" in out
    image = str(shapes_run.evaluated[0][0].path)
    for command in (["predict", str(shapes_run.path), image], ["export", str(shapes_run.path)]):
        code, _, err = run_cli(capsys, *command)
        assert_one_line_error(code, err, f"{command[0]} is not available for instance runs")
