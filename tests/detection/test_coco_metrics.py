"""Detection metrics: convlab's COCO numbers equal pycocotools' on hand-made cases; the confusion matrix counts."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from convlab.detection.metrics import (coco_metrics, confusion_at_iou, image_errors, pr_curves, to_coco_detections,
                                       to_coco_ground_truth)
from convlab.detection.targets import Annotated

CLASSES = ["square", "disc", "triangle"]
STATS = ["map", "map50", "map75", "map_small", "map_medium", "map_large", "mar100"]  # COCOeval.stats 0-5, 8


def image(boxes, labels, name="a.png", iscrowd=None, area=None, size=200):
    return Annotated(Path(name), size, size, np.array(boxes, dtype=np.float32).reshape(-1, 4), labels,
                     iscrowd=None if iscrowd is None else np.array(iscrowd, dtype=np.uint8),
                     area=None if area is None else np.array(area, dtype=np.float32))


def pred(boxes, labels, scores):
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4), "labels": np.array(labels, dtype=np.int64),
            "scores": np.array(scores, dtype=np.float32)}


def no_boxes():
    return pred([], [], [])


def perfect(truth):
    return [pred(item.boxes, item.labels, np.linspace(0.9, 0.5, len(item))) for item in truth]


def pycocotools_stats(truth, predictions, classes):
    """pycocotools' COCOeval run on its own, on the same COCO dicts: stats and per-class AP@[.5:.95]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    detections = json.loads(json.dumps(to_coco_detections(predictions, truth)))
    with contextlib.redirect_stdout(io.StringIO()):  # its log lines and summary table
        ground_truth = COCO()
        ground_truth.dataset = json.loads(json.dumps(to_coco_ground_truth(truth, classes)))  # plain JSON
        ground_truth.createIndex()
        if detections:
            results = ground_truth.loadRes(detections)
        else:  # pycocotools' loadRes cannot take an empty list: an empty result set by hand
            results = COCO()
            results.dataset = {"images": ground_truth.dataset["images"], "annotations": [],
                               "categories": ground_truth.dataset["categories"]}
            results.createIndex()
        evaluation = COCOeval(ground_truth, results, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = dict(zip(STATS, evaluation.stats[[0, 1, 2, 3, 4, 5, 8]]))
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    per_class = {name: precision[:, :, k][precision[:, :, k] > -1] for k, name in enumerate(classes)}
    return stats, {name: float(p.mean()) if p.size else -1.0 for name, p in per_class.items()}


def assert_same_as_pycocotools(truth, predictions, classes=CLASSES):
    ours = coco_metrics(truth, predictions, classes)
    stats, per_class = pycocotools_stats(truth, predictions, classes)
    for name in STATS:
        expected = None if stats[name] == -1 else stats[name]
        assert ours[name] == pytest.approx(expected, abs=1e-4), name
    for name in classes:
        expected = None if per_class[name] == -1 else per_class[name]
        assert ours["per_class_ap"][name] == pytest.approx(expected, abs=1e-4), name
    json.dumps(ours, allow_nan=False)  # JSON-ready: no NaN, no NumPy types
    return ours


TRUTH = [image([[10, 10, 60, 60], [100, 100, 180, 170]], [0, 1], "a.png"),
         image([[20, 30, 50, 90], [5, 5, 25, 25], [120, 20, 190, 150]], [2, 0, 1], "b.png"),
         image([[60, 60, 160, 160]], [1], "c.png")]


def test_perfect_predictions_score_one():
    ours = assert_same_as_pycocotools(TRUTH, perfect(TRUTH))
    assert ours["map"] == ours["map50"] == ours["mar100"] == 1.0
    assert ours["per_class_ap"] == {"square": 1.0, "disc": 1.0, "triangle": 1.0}
    assert (ours["num_images"], ours["num_boxes"]) == (3, 6)


def test_shifted_boxes_lose_the_strict_thresholds_first():
    shifted = [pred(item.boxes + 6, item.labels, np.full(len(item), 0.8)) for item in TRUTH]
    ours = assert_same_as_pycocotools(TRUTH, shifted)
    assert 0 < ours["map"] < ours["map50"] <= 1.0


def test_a_missed_box_halves_recall_of_its_class():
    truth = [image([[10, 10, 60, 60], [100, 100, 150, 150]], [0, 0])]
    ours = assert_same_as_pycocotools(truth, [pred([[10, 10, 60, 60]], [0], [0.9])], ["square"])
    assert ours["mar100"] == pytest.approx(0.5)
    assert ours["map"] == pytest.approx(51 / 101)  # precision 1 at the 51 recall points 0.00 .. 0.50


def test_extra_boxes_and_several_classes():
    predictions = perfect(TRUTH)
    predictions[0] = pred(np.vstack([TRUTH[0].boxes, [[0, 150, 40, 190], [70, 0, 95, 40]]]), [0, 1, 0, 2],
                          [0.6, 0.7, 0.95, 0.9])  # two false boxes scored above the true ones
    predictions[1] = pred(TRUTH[1].boxes, [2, 1, 1], [0.9, 0.8, 0.7])  # the small square called a disc
    ours = assert_same_as_pycocotools(TRUTH, predictions)
    assert ours["map"] < 1.0


def test_crowd_regions_and_their_area_pass_through():
    truth = [image([[10, 10, 60, 60], [80, 80, 190, 190]], [0, 0], iscrowd=[0, 1], area=[2500.0, 900.0]),
             image([[30, 30, 45, 45]], [1], area=[10000.0])]  # area from a mask: "large" although the box is small
    predictions = [pred([[10, 10, 60, 60], [85, 85, 185, 185]], [0, 0], [0.9, 0.95]),
                   pred([[30, 30, 45, 45]], [1], [0.9])]
    ours = assert_same_as_pycocotools(truth, predictions, ["square", "disc"])
    assert ours["map"] == 1.0  # the box on the crowd region is ignored, not false
    assert ours["map_small"] is None and ours["map_medium"] == ours["map_large"] == 1.0
    ground_truth = to_coco_ground_truth(truth, ["square", "disc"])
    assert [a["iscrowd"] for a in ground_truth["annotations"]] == [0, 1, 0]
    assert [a["area"] for a in ground_truth["annotations"]] == [2500.0, 900.0, 10000.0]
    assert ground_truth["annotations"][0]["bbox"] == [10.0, 10.0, 50.0, 50.0]  # xywh
    assert [c["id"] for c in ground_truth["categories"]] == [1, 2]


def test_an_image_without_objects_and_a_class_without_ground_truth():
    truth = [*TRUTH, image([], [], "empty.png")]
    predictions = [*perfect(TRUTH), pred([[0, 0, 30, 30]], [0], [0.99])]
    ours = assert_same_as_pycocotools(truth, predictions, [*CLASSES, "star"])
    assert ours["per_class_ap"]["star"] is None  # COCOeval's -1: no ground truth, left out of the mean
    assert 0 < ours["per_class_ap"]["square"] < 1.0 == ours["per_class_ap"]["disc"]


def test_no_predictions_at_all():
    ours = assert_same_as_pycocotools(TRUTH, [no_boxes() for _ in TRUTH])
    assert ours["map"] == ours["mar100"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sets_match_pycocotools(seed):
    """Many sizes, crowds, empty images, jittered, relabelled, dropped and false boxes, tied scores."""
    rng = np.random.default_rng(seed)
    truth, predictions = [], []
    for i in range(25):
        k = rng.integers(0, 6)
        corners = rng.uniform(0, 300, (k, 2))
        boxes = np.hstack([corners, corners + rng.uniform(4, 200, (k, 2))])
        labels = rng.integers(0, 4, k)
        truth.append(image(boxes, labels, f"{i}.png", iscrowd=rng.random(k) < 0.1, size=500))
        keep = rng.random(k) < 0.8
        moved = boxes[keep] + rng.normal(0, 8, (keep.sum(), 4))
        false = rng.uniform(0, 400, (rng.integers(0, 3), 2))
        false = np.hstack([false, false + 50])
        predictions.append(pred(np.vstack([moved, false]),
                                np.concatenate([np.where(rng.random(keep.sum()) < 0.1, 3, labels[keep]),
                                                rng.integers(0, 4, len(false))]),
                                rng.choice([0.3, 0.5, 0.7, 0.9], keep.sum() + len(false))))
    ours = assert_same_as_pycocotools(truth, predictions, ["a", "b", "c", "d"])
    assert 0 < ours["map"] < 1


def test_no_images_gives_nulls_not_nan():
    ours = coco_metrics([], [], CLASSES)
    assert ours["map"] is None and ours["per_class_ap"] == dict.fromkeys(CLASSES)
    json.dumps(ours, allow_nan=False)


def test_the_libraries_print_nothing(capsys):
    coco_metrics(TRUTH, perfect(TRUTH), CLASSES)
    pr_curves(TRUTH, perfect(TRUTH), CLASSES)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("score", [coco_metrics, pr_curves, confusion_at_iou, image_errors])
def test_one_prediction_per_image_with_class_indices_or_a_message(score):
    with pytest.raises(ValueError, match="predictions for 2 images but 3 images"):
        score(TRUTH, perfect(TRUTH)[:2], CLASSES)
    one_based = perfect(TRUTH)
    one_based[1]["labels"] = one_based[1]["labels"] + 1  # a detector's background slot left in
    with pytest.raises(ValueError, match=r"b.png: predicted label 3 is not a class index 0..2"):
        score(TRUTH, one_based, CLASSES)


def test_image_ids_are_the_datasets_own_when_distinct():
    truth = [image([[0, 0, 10, 10]], [0]), image([[0, 0, 10, 10]], [0])]
    truth[0].image_id, truth[1].image_id = 42, 7
    detections = to_coco_detections([pred([[1, 1, 11, 11]], [0], [0.5])] * 2, truth)
    assert [d["image_id"] for d in detections] == [42, 7]
    assert detections[0]["bbox"] == [1.0, 1.0, 10.0, 10.0] and detections[0]["category_id"] == 1
    truth[1].image_id = 42  # repeated: positions instead
    assert [img["id"] for img in to_coco_ground_truth(truth, ["square"])["images"]] == [1, 2]


def test_pr_curves_at_iou_half():
    truth = [image([[10, 10, 60, 60], [100, 100, 150, 150]], [0, 0])]
    predictions = [pred([[10, 10, 60, 60], [0, 150, 40, 190], [100, 100, 150, 150]], [0, 0, 0], [0.9, 0.8, 0.7])]
    curves = pr_curves(truth, predictions, ["square", "disc"])
    assert len(curves["recall"]) == 101 and curves["recall"][50] == pytest.approx(0.5)
    square = np.array(curves["precision"]["square"])
    # hit, false, hit: precision 1 up to recall 0.5, then 2/3 (COCO's interpolated envelope) up to 1.0
    assert np.allclose(square[:51], 1.0) and np.allclose(square[51:], 2 / 3)
    assert curves["ap50"]["square"] == pytest.approx(square.mean())
    assert curves["precision"]["disc"] is None and curves["ap50"]["disc"] is None


# --- the confusion matrix at one IoU ------------------------------------------------------------------------

def test_confusion_counts_hits_confusions_misses_and_false_boxes():
    truth = [image([[10, 10, 60, 60], [100, 100, 150, 150], [0, 160, 30, 190]], [0, 1, 2]),
             image([], [], "empty.png")]
    predictions = [pred([[12, 12, 60, 60],  # square found (IoU 0.92)
                         [100, 100, 150, 150],  # the disc called a triangle
                         [105, 105, 150, 150],  # a second box on the disc: the first took it -> false
                         [150, 0, 190, 40],  # nothing there -> false square
                         [0, 160, 30, 190]],  # the triangle, but scored below conf -> left out, so missed
                        [0, 2, 1, 0, 2], [0.9, 0.8, 0.7, 0.6, 0.1]),
                   pred([[0, 0, 50, 50]], [1], [0.5])]  # a disc on the empty image -> false
    matrix = confusion_at_iou(truth, predictions, CLASSES, iou=0.5, conf=0.25)
    expected = np.zeros((4, 4), dtype=int)
    expected[0, 0] = 1  # square -> square
    expected[1, 2] = 1  # disc -> triangle
    expected[2, 3] = 1  # triangle missed
    expected[3, 1] = 2  # false discs (the duplicate and the empty image's)
    expected[3, 0] = 1  # false square
    assert matrix.tolist() == expected.tolist()
    errors = image_errors(truth, predictions, CLASSES)
    assert errors == [{"path": "a.png", "missed": 2, "false": 3}, {"path": "empty.png", "missed": 0, "false": 1}]


def test_confusion_pairs_by_highest_iou_first():
    truth = [image([[0, 0, 100, 100], [60, 0, 160, 100]], [0, 1])]
    # the higher-scored disc overlaps the square by 0.67 (the disc by 0.43); the square's own box by 1.0 wins it
    predictions = [pred([[20, 0, 120, 100], [0, 0, 100, 100]], [1, 0], [0.9, 0.8])]
    matrix = confusion_at_iou(truth, predictions, ["square", "disc"])
    assert matrix.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]  # square found, disc missed, the disc box false


def test_a_box_on_a_crowd_region_is_neither_missed_nor_false():
    truth = [image([[0, 0, 100, 100], [120, 120, 190, 190]], [0, 0], iscrowd=[1, 0])]
    predictions = [pred([[5, 5, 100, 100]], [0], [0.9])]
    assert confusion_at_iou(truth, predictions, ["square"]).tolist() == [[0, 1], [0, 0]]
