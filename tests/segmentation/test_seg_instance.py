"""Instance segmentation's pieces: masks read from COCO polygons and RLE and from instance-id PNGs with the boxes
derived from them, the loader carrying masks, Mask R-CNN models, mask AP (pycocotools' numbers), refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlab.detection.batches import DetectionLoader
from convlab.detection.transforms import build_detection_augmentation
from convlab.errors import ConvlabError
from convlab.data.registry import parse_data_name
from convlab.segmentation.instance.datasets import load_instance_pngs, load_shape_instances
from convlab.segmentation.instance.metrics import instance_metrics
from convlab.segmentation.instance.models import MASK_MODELS, build_mask_model
from convlab.segmentation.instance.targets import outlined
from cli_output import assert_one_line_error, run_cli


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # small tensors (conftest puts the count back)


def _square(size, x1, y1, x2, y2):
    mask = np.zeros(size, dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def _coco_folder(tmp_path):
    """Two images per split with polygon objects (a rectangle, an L) and one RLE object."""
    from pycocotools import mask as coco_mask

    polygons = {"rect": [4, 5, 20, 5, 20, 17, 4, 17], "ell": [22, 6, 36, 6, 36, 12, 28, 12, 28, 24, 22, 24]}
    rle_mask = _square((30, 40), 8, 20, 15, 28)
    rle = coco_mask.encode(np.asfortranarray(rle_mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    for split in ("train", "val"):
        (tmp_path / split).mkdir(parents=True)
        images, annotations = [], []
        for image_id in (1, 2):
            Image.new("RGB", (40, 30), (90, 20, 20)).save(tmp_path / split / f"{image_id}.png")
            images.append({"id": image_id, "file_name": f"{image_id}.png", "width": 40, "height": 30})
            for name, category in (("rect", 1), ("ell", 2)):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                    "segmentation": [polygons[name]], "bbox": [0, 0, 1, 1], "area": 1,
                                    "iscrowd": 0})
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 2,
                                "segmentation": rle, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0})
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations,
             "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "wedge"}]}))
    return tmp_path, polygons, rle_mask


def test_coco_polygons_and_rle_become_masks_whose_boxes_are_their_tight_boxes(tmp_path):
    """--data coco:FOLDER --task instance: segmentation's COCO reader, its objects with boxes from the masks."""
    folder, polygons, rle_mask = _coco_folder(tmp_path)
    entry, arg = parse_data_name(f"coco:{folder}")
    found = entry.for_task("instance").loader(None, arg, 0)
    assert found.classes == ["box", "wedge"] and len(found.train) == len(found.test) == 2
    item = found.train[0]
    assert item.masks.shape == (3, 30, 40) and item.labels.tolist() == [0, 1, 1]
    for box, polygon in zip(item.boxes[:2], polygons.values()):
        xs, ys = polygon[0::2], polygon[1::2]
        assert box.tolist() == [min(xs), min(ys), max(xs), max(ys)]  # the file's own bbox (dummy) is not used
    assert np.array_equal(item.masks[2], rle_mask) and item.boxes[2].tolist() == [8, 20, 15, 28]
    assert item.area.tolist() == item.masks.sum(axis=(1, 2)).tolist()


def _id_pngs(root, sizes=((40, 30), (40, 30), (40, 30), (40, 30), (40, 30))):
    for part in ("images", "masks"):
        (root / part).mkdir(parents=True)
    for n, (width, height) in enumerate(sizes):
        Image.new("RGB", (width, height), (10, 10, 10)).save(root / "images" / f"p{n}.png")
        ids = np.zeros((30, 40), np.uint8)
        ids[2:10, 3:12] = 1
        ids[15:28, 20:38] = 2
        Image.fromarray(ids).save(root / "masks" / f"p{n}_mask.png")
    (root / "classes.txt").write_text("background\nperson\n")
    return root


def test_instance_id_pngs_give_one_object_per_id(tmp_path):
    found = load_instance_pngs(None, str(_id_pngs(tmp_path / "peds")), 0)
    assert found.classes == ["person"] and len(found.train) + len(found.test) == 5 and found.notes
    item = found.train[0]
    assert item.labels.tolist() == [0, 0] and item.boxes.tolist() == [[3, 2, 12, 10], [20, 15, 38, 28]]
    assert item.masks.sum() == 8 * 9 + 13 * 18


def test_an_instance_mask_of_another_size_is_refused_by_file(tmp_path):
    root = _id_pngs(tmp_path / "peds", sizes=((40, 30),) * 4 + ((41, 30),))
    with pytest.raises(ConvlabError, match=r"p4_mask.png: a 40x30 mask for a 41x30 image"):
        load_instance_pngs(None, str(root), 0)


def test_generated_shape_instances_drop_the_background_class(tmp_path):
    found = load_shape_instances(tmp_path, None, 0)
    assert found.classes == ["square", "disc", "triangle"] and found.name == "shape-instances"
    item = found.train[0]
    assert item.masks.shape[1:] == (64, 64) and item.labels.min() >= 0 and item.labels.max() <= 2
    for mask, box in zip(item.masks, item.boxes):
        rows, cols = np.nonzero(mask)
        assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def test_the_loader_resizes_and_flips_masks_with_the_image(tmp_path):
    Image.new("RGB", (80, 40)).save(tmp_path / "a.png")
    item = outlined(tmp_path / "a.png", _square((40, 80), 10, 4, 30, 20)[None], [1])
    loader = DetectionLoader([item], 1, "cpu", max_side=40)
    _, targets = next(iter(loader))
    masks = targets[0]["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (1, 20, 40)
    assert torch.equal(masks[0], torch.from_numpy(_square((20, 40), 5, 2, 15, 10)).to(torch.uint8))
    light, generator = build_detection_augmentation("light"), torch.Generator().manual_seed(0)
    flips = set()
    for _ in range(10):
        _, target = light.apply(loader.images[0], {k: v.clone() for k, v in targets[0].items()}, generator)
        rows, cols = np.nonzero(target["masks"][0].numpy())
        assert target["boxes"][0].tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        flips.add(int(cols.min()))
    assert flips == {5, 25}


def _items():
    a = outlined(Path("a.png"), np.stack([_square((20, 20), 2, 2, 8, 8), _square((20, 20), 10, 10, 18, 16)]), [0, 1])
    b = outlined(Path("b.png"), np.stack([_square((20, 20), 0, 0, 20, 5)]), [1], image_id=2)
    a.image_id = 1
    return [a, b]


def _found(masks, labels, scores):
    from convlab.segmentation.instance.targets import mask_boxes

    masks = np.asarray(masks, dtype=bool).reshape(-1, 20, 20)
    return {"masks": masks, "boxes": mask_boxes(masks), "labels": np.array(labels), "scores": np.array(scores)}


def test_mask_ap_of_perfect_predictions_is_one():
    items = _items()
    found = [_found(item.masks, item.labels, np.ones(len(item))) for item in items]
    metrics = instance_metrics(items, found, ["a", "b"])
    assert metrics["mask_map"] == metrics["mask_map50"] == metrics["box_map"] == 1.0
    assert metrics["per_class_ap"] == {"a": 1.0, "b": 1.0} and metrics["num_instances"] == 3


def test_mask_ap_equals_pycocotools_on_a_hand_made_case():
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    items = _items()
    found = [_found([_square((20, 20), 2, 2, 8, 8), _square((20, 20), 11, 10, 18, 14), _square((20, 20), 0, 12, 6, 20)],
                    [0, 1, 0], [0.9, 0.7, 0.95]),
             _found([_square((20, 20), 0, 0, 20, 3), _square((20, 20), 0, 0, 20, 5)], [1, 0], [0.6, 0.5])]
    encode = lambda m: {**(r := coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))),  # noqa: E731
                        "counts": r["counts"].decode("ascii")}
    truth = {"images": [{"id": i + 1, "width": 20, "height": 20} for i in range(2)],
             "categories": [{"id": 1}, {"id": 2}], "annotations": []}
    results = []
    for image_id, (item, pred) in enumerate(zip(items, found), start=1):
        for mask, label in zip(item.masks, item.labels):
            truth["annotations"].append({"id": len(truth["annotations"]) + 1, "image_id": image_id, "iscrowd": 0,
                                         "category_id": int(label) + 1, "segmentation": encode(mask),
                                         "area": float(mask.sum()), "bbox": [0, 0, 1, 1]})
        results += [{"image_id": image_id, "category_id": int(label) + 1, "segmentation": encode(mask),
                     "score": float(score)} for mask, label, score in zip(pred["masks"], pred["labels"],
                                                                          pred["scores"])]
    gt = COCO()
    gt.dataset = truth
    gt.createIndex()
    evaluation = COCOeval(gt, gt.loadRes(results), iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    ours = instance_metrics(items, found, ["a", "b"])
    assert 0 < ours["mask_map"] < 1
    assert [ours["mask_map"], ours["mask_map50"], ours["mask_map75"]] == pytest.approx(list(evaluation.stats[:3]),
                                                                                        abs=1e-12)


@pytest.mark.parametrize("name", ["tiny-maskrcnn", pytest.param("maskrcnn_resnet50_fpn", marks=pytest.mark.slow)])
def test_a_mask_model_trains_on_masks_and_answers_with_them(name):
    torch.manual_seed(0)
    model = build_mask_model(name, 2, 64)
    assert model.model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3  # 2 classes and background
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([1]),
                "masks": torch.from_numpy(_square((64, 64), 8, 8, 30, 40)[None]).to(torch.uint8)}]
    model.train()
    losses = model([torch.rand(3, 64, 64)], targets)
    assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 48)])[0]
    assert out["masks"].shape[1:] == (1, 64, 48) and all(0 <= label < 2 for label in out["labels"].tolist())


def test_a_mask_rcnn_on_a_classification_backbone():
    model = build_mask_model("ignored", 1, 96, backbone="torchvision:mobilenet_v2")
    assert model.backbone_spec == "torchvision:mobilenet_v2"
    assert model.model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 2


def test_an_unknown_mask_model_gets_suggestions():
    assert {"maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2", "tiny-maskrcnn"} <= set(MASK_MODELS)
    with pytest.raises(ConvlabError, match="unknown instance segmentation model 'maskrcnn'.*Did you mean"):
        build_mask_model("maskrcnn", 2, 64)


@pytest.mark.parametrize("flags, fragment", [
    (["--engine", "scratch"], "--engine scratch is not available for instance runs"),
    (["--loss", "dice"], "--loss dice is not available for instance runs"),
    (["--tensorboard"], "--tensorboard is not available for instance runs"),
    (["--task", "detect"], "--task detect does not fit --data shape-instances"),
])
def test_what_an_instance_run_cannot_do_is_refused_by_name(tmp_path, capsys, flags, fragment):
    code, _, err = run_cli(capsys, "train", "--data", "shape-instances", "--out", str(tmp_path / "run"), *flags)
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "run").exists()


def test_data_without_masks_is_refused_for_instance_runs(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", "shapes", "--task", "instance", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "--task instance does not fit --data shapes")
