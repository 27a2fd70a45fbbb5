"""Segmentation metrics: IoU, Dice and pixel accuracy from one confusion matrix; mask AP by the COCO evaluator.

The semantic numbers come from a (K, K) pixel confusion matrix (true class on rows, predicted on columns),
counted with torch.bincount as torchvision's segmentation reference (`utils.ConfusionMatrix`) counts it, and
defined exactly as torchmetrics defines them on the same pixels, so either can check the other:

- mIoU is MulticlassJaccardIndex(average="macro", ignore_index=255): the mean IoU over the classes that occur
  in the truth or in the prediction; a class in neither has no IoU (None here) and stays out of the mean.
- Dice (a class's F1 score, 2TP / (2TP + FP + FN)) is MulticlassF1Score(average="macro"): the same classes.
- pixel accuracy is MulticlassAccuracy(average="micro"): correct pixels over all counted pixels.

Pixels whose truth is IGNORE (255) are not counted anywhere. Mask AP@[.5:.95] is never computed here: the
instance masks go, RLE-encoded, to faster-coco-eval's COCOeval with iouType="segm", as the detection boxes do.
"""
from __future__ import annotations

import numpy as np
import torch

from ..detection.metrics import check_predictions, coco_summary, evaluate_coco, image_ids
from .targets import IGNORE, Masked


class ConfusionMeter:
    """Pixel counts of (true class, predicted class) over batches; `compute()` gives the metrics.

    `classes` names the keys of the per-class dicts; without it they are the class indices.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE, classes: list[str] | None = None):
        if classes is not None and len(classes) != num_classes:
            raise ValueError(f"got {len(classes)} class names for num_classes={num_classes}: give one per class")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.names = list(classes) if classes is not None else list(range(num_classes))
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [true, predicted]

    def update(self, pred, target) -> None:
        """Count one batch: `pred` and `target` class indices of the same shape, (N, H, W) or (H, W), torch or NumPy."""
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}: "
                             "give one class index per pixel in both (argmax the logits over classes first)")
        target, pred = target.long(), pred.long()
        kept = target != self.ignore_index
        for name, values in (("target", target), ("prediction", pred)):
            outside = kept & ((values < 0) | (values >= self.num_classes))
            if outside.any():
                raise ValueError(f"{name} holds class index {int(values[outside][0])}, outside 0.."
                                 f"{self.num_classes - 1} ({self.num_classes} classes; {self.ignore_index} = ignore)")
        # ignored pixels go to one extra bin, dropped: cheaper than selecting the kept pixels (a boolean index)
        bins = torch.where(kept, target * self.num_classes + pred, self.num_classes ** 2)
        counts = torch.bincount(bins.ravel(), minlength=self.num_classes ** 2 + 1)[:-1]
        self.matrix += counts.reshape(self.num_classes, self.num_classes).cpu()

    def compute(self) -> dict:
        """miou, dice, pixel_accuracy (None before any pixel), per_class_iou and per_class_dice ({class: float, or
        None for a class in neither truth nor prediction}), confusion ([true][predicted] counts), num_pixels."""
        matrix = self.matrix.double()
        hits, in_truth, in_pred = matrix.diag(), matrix.sum(1), matrix.sum(0)
        seen = (in_truth + in_pred) > 0
        iou = hits / (in_truth + in_pred - hits)
        dice = 2 * hits / (in_truth + in_pred)
        total = int(matrix.sum())
        return {"miou": float(iou[seen].mean()) if seen.any() else None,
                "dice": float(dice[seen].mean()) if seen.any() else None,
                "pixel_accuracy": float(hits.sum() / total) if total else None,
                "per_class_iou": self._per_class(iou, seen), "per_class_dice": self._per_class(dice, seen),
                "confusion": self.matrix.tolist(), "num_pixels": total}

    def _per_class(self, values: torch.Tensor, seen: torch.Tensor) -> dict:
        return {name: float(value) if present else None
                for name, value, present in zip(self.names, values.tolist(), seen.tolist())}


def segmentation_metrics(truth_masks: list, predicted_masks: list, classes: list[str]) -> dict:
    """ConfusionMeter's metrics over a whole dataset: one (H, W) truth and predicted class map per image, each
    image its own size (255 in the truth = ignore)."""
    if len(truth_masks) != len(predicted_masks):
        raise ValueError(f"got {len(predicted_masks)} predicted masks for {len(truth_masks)} truth masks: "
                         "give one per image, in the same order")
    meter = ConfusionMeter(len(classes), classes=classes)
    for truth, pred in zip(truth_masks, predicted_masks):
        meter.update(pred, truth)
    return meter.compute()


def to_coco_mask_ground_truth(truth: list[Masked], classes: list[str]) -> dict:
    """The instance masks as a COCO annotations dict: RLE segmentations (counts as text), their area and box.

    Ids as detection's: category id = 0-based class index + 1, image id = the dataset's or position + 1.
    """
    images, annotations = [], []
    for image_id, item in zip(image_ids(truth), truth):
        if item.instances is None:
            raise ValueError(f"{item.path.name}: no instance masks, only a class map: mask AP needs one mask per "
                             "object (COCO, YOLO-seg or instance-id PNG masks)")
        images.append({"id": image_id, "file_name": item.path.name, "width": item.width, "height": item.height})
        for rle, label in zip(_encode(item.instances), item.labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "segmentation": rle, "area": _area(rle), "bbox": _box(rle), "iscrowd": 0})
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def to_coco_mask_results(found: list[dict], truth: list[Masked]) -> list[dict]:
    """Found instances (masks (M, H, W) bool, or probabilities thresholded at 0.5 as torchvision's reference does;
    labels (M,) 0-based; scores (M,)) per image of `truth`, as COCO results with RLE segmentations."""
    results = []
    for image_id, item, pred in zip(image_ids(truth), truth, found):
        masks = np.asarray(pred["masks"])
        masks = masks if masks.dtype == bool else masks > 0.5
        if masks.size and masks.shape[-2:] != item.mask.shape:
            raise ValueError(f"{item.path.name}: predicted masks are {masks.shape[-2]}x{masks.shape[-1]} but the "
                             f"image is {item.height}x{item.width}: give masks at the image's size")
        masks = masks.reshape(-1, *item.mask.shape)
        labels = np.asarray(pred["labels"], dtype=np.int64).reshape(-1)
        scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
        for rle, label, score in zip(_encode(masks), labels.tolist(), scores.tolist()):
            results.append({"image_id": image_id, "category_id": label + 1, "segmentation": rle, "score": score})
    return results


def mask_ap(truth: list[Masked], found: list[dict], classes: list[str]) -> dict:
    """COCO mask metrics of `found` (one dict per image of `truth`), flat and JSON-ready.

    Keys as detection's coco_metrics (map = AP@[.5:.95], map50, map75, map_small/medium/large, mar100,
    per_class_ap, None where COCO defines no value) with the IoU of masks instead of boxes; num_images and
    num_instances. Only classes with ground truth instances enter the mean (a "background" class never does).
    """
    check_predictions(truth, found, classes, kind="masks")
    ground_truth = to_coco_mask_ground_truth(truth, classes)
    metrics = coco_summary(evaluate_coco(ground_truth, to_coco_mask_results(found, truth), "segm"), classes)
    metrics["num_images"] = len(truth)
    metrics["num_instances"] = len(ground_truth["annotations"])
    return metrics


def _encode(masks: np.ndarray) -> list[dict]:
    """(M, H, W) bool masks as COCO RLEs (faster-coco-eval's encoder; counts decoded to text, so JSON-ready)."""
    from faster_coco_eval.core import mask as coco_mask

    if not len(masks):
        return []
    rles = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))  # (H, W, M) column-major
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]


def _area(rle: dict) -> int:
    from faster_coco_eval.core import mask as coco_mask

    return int(coco_mask.area(_as_bytes(rle)))


def _box(rle: dict) -> list[float]:
    from faster_coco_eval.core import mask as coco_mask

    return coco_mask.toBbox(_as_bytes(rle)).tolist()


def _as_bytes(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
