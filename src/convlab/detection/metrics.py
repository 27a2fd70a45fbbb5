"""Detection metrics: COCO mAP and its curves through faster-coco-eval, and a confusion matrix at one IoU.

mAP is never computed here by hand: the boxes go to faster-coco-eval's COCOeval (the C++ port of
pycocotools' COCOeval, same numbers, no stdout table, and an empty set of detections evaluates instead of
failing). `to_coco_ground_truth` and `to_coco_detections` give the exact dicts it scores, so anyone can
re-score them with pycocotools and get the same mAP. Segmentation's mask AP goes through the same `evaluate_coco`.

Ids in the COCO dicts: a category id is the 0-based class index + 1 (COCO's ids start at 1); an image id is
the dataset's own `Annotated.image_id` when those are distinct, else the image's position + 1.
"""
from __future__ import annotations

import numpy as np

from .targets import Annotated

# COCOeval's stats, in its order: AP@[.5:.95], AP50, AP75, AP small, medium, large, AR@1, AR@10, AR@100
_STATS = {"map": 0, "map50": 1, "map75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "mar100": 8}


def image_ids(truth: list[Annotated]) -> list[int]:
    """The COCO image id of each image: its own id when the dataset's ids are distinct, else position + 1."""
    ids = [int(item.image_id) for item in truth]
    return ids if len(set(ids)) == len(ids) else list(range(1, len(truth) + 1))


def to_coco_ground_truth(truth: list[Annotated], classes: list[str]) -> dict:
    """The ground truth as a COCO annotations dict (xywh boxes, iscrowd and area as the dataset gives them)."""
    images, annotations = [], []
    for image_id, item in zip(image_ids(truth), truth):
        images.append({"id": image_id, "file_name": item.path.name, "width": item.width, "height": item.height})
        for box, label, crowd, area in zip(item.boxes.tolist(), item.labels.tolist(), item.iscrowd.tolist(),
                                           item.area.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": _xywh(box), "area": area, "iscrowd": crowd})
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def to_coco_detections(predictions: list[dict], truth: list[Annotated]) -> list[dict]:
    """Predictions (boxes (M, 4) xyxy, labels (M,) 0-based, scores (M,) per image of `truth`) as COCO results."""
    results = []
    for image_id, pred in zip(image_ids(truth), predictions):
        boxes, labels, scores = _as_arrays(pred)
        for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            results.append({"image_id": image_id, "category_id": label + 1, "bbox": _xywh(box), "score": score})
    return results


def coco_metrics(truth: list[Annotated], predictions: list[dict], classes: list[str]) -> dict:
    """COCO box metrics of `predictions` (one dict per image of `truth`), flat and JSON-ready.

    Keys: map (AP@[.5:.95]), map50, map75, map_small, map_medium, map_large, mar100, per_class_ap
    {class: AP@[.5:.95]}, num_images, num_boxes. A value COCO cannot define (a class without ground truth,
    no small objects, ...) is None, where COCOeval says -1. Only classes with ground truth enter the mean.
    """
    metrics = coco_summary(_evaluate(truth, predictions, classes), classes)
    metrics["num_images"] = len(truth)
    metrics["num_boxes"] = int(sum(len(item) for item in truth))
    return metrics


def pr_curves(truth: list[Annotated], predictions: list[dict], classes: list[str]) -> dict:
    """Precision at COCO's 101 recall points at IoU 0.5, per class, from COCOeval's accumulated precision.

    Returns {"recall": [101 floats], "precision": {class: [101] or None}, "ap50": {class: float or None}}:
    None for a class without ground truth (precision is 0 past the highest recall a class reaches).
    """
    evaluation = _evaluate(truth, predictions, classes)
    at_50 = evaluation.eval["precision"][0, :, :, 0, -1]  # (recall, class)
    precision, ap50 = {}, {}
    for k, name in enumerate(classes):
        curve = at_50[:, k]
        precision[name] = curve.tolist() if (curve > -1).any() else None
        ap50[name] = _mean_defined(curve)
    return {"recall": evaluation.params.recThrs.tolist(), "precision": precision, "ap50": ap50}


def confusion_at_iou(truth: list[Annotated], predictions: list[dict], classes: list[str], iou: float = 0.5,
                     conf: float = 0.25) -> np.ndarray:
    """(C+1, C+1) counts: true class on rows, predicted class on columns, the last row and column "background".

    As Ultralytics' ConfusionMatrix: boxes scoring below `conf` are left out; ground truth and predictions
    are paired regardless of class, greedily by IoU (the highest-IoU pair first, each box once) among pairs
    with IoU above `iou`. A paired box counts at [true, predicted] (the diagonal when the classes agree), an
    unpaired ground truth box at [true, background] (missed), an unpaired prediction at [background,
    predicted] (false). Crowd regions are not objects to find: they are never missed, and a prediction
    overlapping one by more than `iou` is not counted as false (COCO ignores both).
    """
    check_predictions(truth, predictions, classes)
    matrix = np.zeros((len(classes) + 1, len(classes) + 1), dtype=np.int64)
    for item, pred in zip(truth, predictions):
        matrix += _image_confusion(item, pred, len(classes), iou, conf)
    return matrix


def image_errors(truth: list[Annotated], predictions: list[dict], classes: list[str], iou: float = 0.5,
                 conf: float = 0.25) -> list[dict]:
    """Per image (in `truth` order): {"path", "missed", "false"} box counts, matched as `confusion_at_iou`.

    A box found with the wrong class counts once as missed (its true class) and once as false (the
    predicted one), as in the confusion matrix's off-diagonal cells.
    """
    check_predictions(truth, predictions, classes)
    rows = []
    for item, pred in zip(truth, predictions):
        matrix = _image_confusion(item, pred, len(classes), iou, conf)
        correct = int(np.trace(matrix[:-1, :-1]))
        rows.append({"path": str(item.path), "missed": int(matrix[:-1].sum()) - correct,
                     "false": int(matrix[:, :-1].sum()) - correct})
    return rows


def _image_confusion(item: Annotated, pred: dict, num_classes: int, iou: float, conf: float) -> np.ndarray:
    """One image's (C+1, C+1) confusion counts (see confusion_at_iou)."""
    boxes, labels, scores = _as_arrays(pred)
    boxes, labels = boxes[scores >= conf], labels[scores >= conf]
    crowd = item.iscrowd.astype(bool)
    gt_labels = item.labels[~crowd]
    overlaps = _box_iou(item.boxes[~crowd], boxes)
    pairs = greedy_pairs(overlaps, overlaps > iou)  # (truth, prediction): the highest IoU above `iou` first
    on_crowd = (_box_iou(item.boxes[crowd], boxes) > iou).any(axis=0)
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for g, p in pairs:
        matrix[gt_labels[g], labels[p]] += 1
    for g in set(range(len(gt_labels))) - {g for g, _ in pairs}:
        matrix[gt_labels[g], num_classes] += 1  # missed
    for p in set(range(len(labels))) - {p for _, p in pairs}:
        if not on_crowd[p]:
            matrix[num_classes, labels[p]] += 1  # false
    return matrix


def greedy_pairs(score: np.ndarray, eligible: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs of a (K, M) score matrix among its `eligible` entries, the highest score first (ties in
    row-major order), each row and each column used once: the confusion matrix pairs truth and predicted boxes by
    IoU, the export check pairs two runtimes' boxes by their difference."""
    candidates = np.argwhere(eligible)
    candidates = candidates[np.argsort(-score[candidates[:, 0], candidates[:, 1]], kind="stable")]
    pairs, rows, columns = [], set(), set()
    for row, column in candidates.tolist():
        if row not in rows and column not in columns:
            pairs.append((row, column))
            rows.add(row)
            columns.add(column)
    return pairs


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, M) IoU of xyxy boxes by torchvision.ops.box_iou, in float64."""
    import torch
    from torchvision.ops import box_iou

    return box_iou(torch.from_numpy(np.asarray(a, np.float64)), torch.from_numpy(np.asarray(b, np.float64))).numpy()


def coco_summary(evaluation, classes: list[str]) -> dict:
    """An evaluated COCOeval's numbers, flat and JSON-ready: _STATS' keys and per_class_ap (see coco_metrics)."""
    metrics = {name: _defined(evaluation.stats[index]) for name, index in _STATS.items()}
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (IoU, recall, class) at area "all", 100 dets
    metrics["per_class_ap"] = {name: _mean_defined(precision[:, :, k]) for k, name in enumerate(classes)}
    return metrics


def evaluate_coco(ground_truth: dict, results: list[dict], iou_type: str = "bbox"):
    """faster-coco-eval's COCOeval of COCO `results` against a COCO `ground_truth` dict ("bbox" or "segm"
    iouType), evaluated, accumulated and summarized, printing nothing."""
    from faster_coco_eval import COCO, COCOeval_faster

    truth = COCO(ground_truth, print_function=_quiet)
    found = truth.loadRes(results)
    found.print_function = _quiet
    evaluation = COCOeval_faster(truth, found, iouType=iou_type, print_function=_quiet)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation


def _evaluate(truth: list[Annotated], predictions: list[dict], classes: list[str]):
    """COCOeval on the boxes (see evaluate_coco)."""
    check_predictions(truth, predictions, classes)
    return evaluate_coco(to_coco_ground_truth(truth, classes), to_coco_detections(predictions, truth))


def check_predictions(truth: list, predictions: list[dict], classes: list[str], kind: str = "boxes") -> None:
    """One prediction dict per image, each label a class index: else a ValueError saying which and what to do.

    `truth` items need a `path`; `kind` names what the dicts hold beside labels and scores (boxes, masks).
    """
    if len(predictions) != len(truth):
        raise ValueError(f"got predictions for {len(predictions)} images but {len(truth)} images of ground "
                         f"truth: give one dict ({kind}, labels, scores) per image, empty arrays when none")
    for item, pred in zip(truth, predictions):
        labels = np.asarray(pred["labels"], dtype=np.int64).reshape(-1)
        if labels.size and not 0 <= labels.min() <= labels.max() < len(classes):
            bad = labels[(labels < 0) | (labels >= len(classes))][0]
            raise ValueError(f"{item.path.name}: predicted label {bad} is not a class index 0..{len(classes) - 1} "
                             f"({len(classes)} classes): labels are 0-based, without a background slot")


def _quiet(*args, **kwargs) -> None:
    """COCOeval's print function here: its log lines and summary table stay out of convlab's output."""


def _as_arrays(pred: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A prediction dict's boxes (M, 4) float64, labels (M,) int64 and scores (M,) float64 (torch or NumPy)."""
    boxes = np.asarray(pred["boxes"], dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(pred["labels"], dtype=np.int64).reshape(-1)
    scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
    return boxes, labels, scores


def _xywh(box: list[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [x1, y1, x2 - x1, y2 - y1]


def _defined(value: float) -> float | None:
    """COCOeval's -1 ("not defined here") as None; any other value as a plain float."""
    return None if value <= -1 else float(value)


def _mean_defined(values: np.ndarray) -> float | None:
    """The mean of the entries COCOeval defined (> -1), as its summarize() takes it; None when there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None
