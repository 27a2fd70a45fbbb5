"""Segmentation metrics equal torchmetrics' (IoU, Dice, pixel accuracy) and pycocotools' (mask AP) on hand-made
cases."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassJaccardIndex

from convlab.segmentation.metrics import ConfusionMeter, mask_ap, segmentation_metrics
from convlab.segmentation.targets import IGNORE, Masked

CLASSES = ["background", "square", "disc", "triangle"]


def square(size=32, top=8, left=8, side=12, value=1, base=None):
    mask = np.zeros((size, size), np.uint8) if base is None else base.copy()
    mask[top:top + side, left:left + side] = value
    return mask


def torchmetrics_values(pred, target):
    """torchmetrics on the same pixels: macro IoU and F1 (= Dice), micro accuracy, per-class IoU and F1."""
    pred, target = torch.as_tensor(np.asarray(pred)).long(), torch.as_tensor(np.asarray(target)).long()
    common = {"num_classes": len(CLASSES), "ignore_index": IGNORE}
    return {"miou": MulticlassJaccardIndex(average="macro", **common)(pred, target).item(),
            "dice": MulticlassF1Score(average="macro", **common)(pred, target).item(),
            "pixel_accuracy": MulticlassAccuracy(average="micro", **common)(pred, target).item(),
            "iou": MulticlassJaccardIndex(average="none", **common)(pred, target).tolist(),
            "f1": MulticlassF1Score(average="none", **common)(pred, target).tolist()}


def assert_same_as_torchmetrics(pred, target):
    meter = ConfusionMeter(len(CLASSES), classes=CLASSES)
    meter.update(pred, target)
    ours, theirs = meter.compute(), torchmetrics_values(pred, target)
    for name in ("miou", "dice", "pixel_accuracy"):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name
    for k, name in enumerate(CLASSES):
        if ours["per_class_iou"][name] is not None:  # torchmetrics says 0 for a class in neither map
            assert ours["per_class_iou"][name] == pytest.approx(theirs["iou"][k], abs=1e-6), name
            assert ours["per_class_dice"][name] == pytest.approx(theirs["f1"][k], abs=1e-6), name
    json.dumps(ours, allow_nan=False)
    return ours


def test_a_perfect_prediction_scores_one_and_classes_absent_from_both_are_none():
    target = square(base=square(top=20, left=2, side=6, value=2))
    ours = assert_same_as_torchmetrics(target, target)
    assert ours["miou"] == ours["dice"] == ours["pixel_accuracy"] == 1.0
    assert ours["per_class_iou"]["triangle"] is None  # in neither map: no IoU, out of the mean
    assert ours["num_pixels"] == 32 * 32


def test_a_shifted_square_has_the_iou_of_its_overlap():
    target, pred = square(), square(top=10, left=10)
    ours = assert_same_as_torchmetrics(pred, target)
    overlap, union = 10 * 10, 2 * 144 - 100
    assert ours["per_class_iou"]["square"] == pytest.approx(overlap / union)
    assert ours["per_class_dice"]["square"] == pytest.approx(2 * overlap / (2 * 144))
    assert ours["pixel_accuracy"] == pytest.approx(1 - 2 * 44 / 32 ** 2)


def test_a_class_missing_from_the_prediction_counts_zero():
    target = square(base=square(top=22, left=22, side=6, value=3))
    pred = square()  # the triangle is called background
    ours = assert_same_as_torchmetrics(pred, target)
    assert ours["per_class_iou"]["triangle"] == 0.0
    assert ours["confusion"][3][0] == 36


def test_ignored_pixels_count_nowhere_whatever_is_predicted_there():
    target = square()
    target[:4] = IGNORE
    pred = square(top=10, left=10)
    pred[:4] = 2  # a wrong class, but on ignored pixels
    ours = assert_same_as_torchmetrics(pred, target)
    assert ours["num_pixels"] == 28 * 32
    assert ours["per_class_iou"]["disc"] is None
    assert sum(map(sum, ours["confusion"])) == ours["num_pixels"]


def test_batches_accumulate_like_one_pass_and_images_may_differ_in_size():
    rng = np.random.default_rng(0)
    targets = [rng.integers(0, 4, size).astype(np.uint8) for size in [(20, 30), (32, 16), (7, 9)]]
    preds = [np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 4, t.shape)).astype(np.uint8) for t in targets]
    ours = segmentation_metrics(targets, preds, CLASSES)
    flat_pred = np.concatenate([p.ravel() for p in preds])
    flat_target = np.concatenate([t.ravel() for t in targets])
    theirs = torchmetrics_values(flat_pred, flat_target)
    for name in ("miou", "dice", "pixel_accuracy"):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-6), name
    batched = ConfusionMeter(4)
    batched.update(torch.as_tensor(np.stack([targets[0], targets[0]])), torch.as_tensor(np.stack([targets[0]] * 2)))
    assert batched.compute()["per_class_iou"] == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}  # keys are indices without names


def test_bad_input_is_refused_with_what_to_do():
    meter = ConfusionMeter(4)
    with pytest.raises(ValueError, match=r"prediction shape \(2, 3\) differs from target shape \(3, 2\)"):
        meter.update(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"target holds class index 7, outside 0..3"):
        meter.update(np.zeros((2, 2)), np.array([[0, 7], [IGNORE, 1]]))
    with pytest.raises(ValueError, match="give one per image"):
        segmentation_metrics([np.zeros((2, 2))], [], CLASSES)
    assert ConfusionMeter(4).compute()["miou"] is None


# --- mask AP ------------------------------------------------------------------------------------------------

def instances(boxes, labels, name, size=(40, 48)):
    """A Masked with one rectangle instance per (top, left, bottom, right) box; the class map to match."""
    masks = np.zeros((len(boxes), *size), bool)
    semantic = np.zeros(size, np.uint8)
    for i, ((top, left, bottom, right), label) in enumerate(zip(boxes, labels)):
        masks[i, top:bottom, left:right] = True
        semantic[masks[i]] = label
    return Masked(Path(name), semantic, masks, np.array(labels))


TRUTH = [instances([(2, 2, 12, 14), (20, 20, 36, 40)], [1, 2], "a.png"),
         instances([(5, 30, 25, 46), (0, 0, 8, 8), (28, 4, 38, 18)], [3, 1, 2], "b.png")]


def found(item, scores, shift=0, labels=None):
    return {"masks": np.roll(item.instances, shift, axis=2), "scores": np.array(scores),
            "labels": item.labels if labels is None else np.array(labels)}


def pycocotools_map(truth, predictions, classes):
    """pycocotools' COCOeval run on its own, with masks RLE-encoded by pycocotools: AP@[.5:.95], AP50, AP75."""
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def encode(masks):
        return coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))

    images, annotations, results = [], [], []
    for image_id, (item, pred) in enumerate(zip(truth, predictions), start=1):
        images.append({"id": image_id, "width": item.width, "height": item.height})
        for rle, label in zip(encode(item.instances), item.labels):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                "segmentation": rle, "area": float(coco_mask.area(rle)), "iscrowd": 0,
                                "bbox": coco_mask.toBbox(rle).tolist()})
        for rle, label, score in zip(encode(pred["masks"]), pred["labels"], pred["scores"]):
            results.append({"image_id": image_id, "category_id": int(label) + 1, "segmentation": rle,
                            "score": float(score)})
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = {"images": images, "annotations": annotations,
                                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)]}
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), "segm")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return dict(zip(["map", "map50", "map75"], evaluation.stats[:3].tolist()))


def test_perfect_masks_score_one_and_background_has_no_ap():
    ours = mask_ap(TRUTH, [found(item, [0.9] * len(item.labels)) for item in TRUTH], CLASSES)
    assert ours["map"] == ours["map50"] == ours["map75"] == pytest.approx(1.0)
    assert ours["per_class_ap"]["background"] is None
    assert ours["num_instances"] == 5
    json.dumps(ours, allow_nan=False)


def test_mask_ap_equals_pycocotools_on_shifted_and_wrong_masks():
    predictions = [found(TRUTH[0], [0.9, 0.4], shift=3),  # overlaps shrink: AP falls at the strict IoUs
                   found(TRUTH[1], [0.8, 0.7, 0.95], shift=1, labels=[3, 2, 2])]  # one class wrong
    predictions[1]["masks"] = predictions[1]["masks"].astype(np.float32) * 0.9  # probabilities, thresholded at 0.5
    ours = mask_ap(TRUTH, predictions, CLASSES)
    as_bool = [{**p, "masks": np.asarray(p["masks"]) > 0.5} for p in predictions]
    theirs = pycocotools_map(TRUTH, as_bool, CLASSES)
    for name in ("map", "map50", "map75"):
        assert ours[name] == pytest.approx(theirs[name], abs=1e-4), name
    assert 0 < ours["map"] < ours["map50"] < 1


def test_mask_ap_refuses_class_maps_and_masks_of_another_size():
    semantic_only = [Masked(Path("c.png"), np.zeros((8, 8), np.uint8))]
    with pytest.raises(ValueError, match="c.png: no instance masks"):
        mask_ap(semantic_only, [{"masks": np.zeros((0, 8, 8), bool), "labels": [], "scores": []}], CLASSES)
    wrong = {"masks": np.zeros((1, 10, 10), bool), "labels": [1], "scores": [0.5]}
    with pytest.raises(ValueError, match=r"a.png: predicted masks are 10x10 but the image is 40x48"):
        mask_ap(TRUTH[:1], [wrong], CLASSES)
    with pytest.raises(ValueError, match=r"a.png: predicted label 4 is not a class index"):
        mask_ap(TRUTH[:1], [{**wrong, "labels": [4]}], CLASSES)
    empty = mask_ap(TRUTH, [{"masks": np.zeros((0, 40, 48), bool), "labels": [], "scores": []}] * 2, CLASSES)
    assert empty["map"] == 0.0
