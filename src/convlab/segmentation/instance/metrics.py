"""Mask AP@[.5:.95] through faster-coco-eval's COCOeval with iouType="segm": detection's COCO dicts (ids, boxes,
areas, crowd flags) with each object's mask added as RLE; nothing is scored by hand here."""
from __future__ import annotations

import numpy as np

from ...detection.metrics import (_STATS, _defined, _mean_defined, _quiet, coco_metrics, to_coco_detections,
                                 to_coco_ground_truth)
from ...detection.targets import Annotated


def mask_ap(truth: list[Annotated], found: list[dict], classes: list[str]) -> dict:
    """COCO mask metrics of `found` (per image of `truth`: "masks" (M, H, W) bool, or probabilities cut at 0.5
    as torchvision's reference does, at the image's size; "boxes", "labels" 0-based, "scores"), with the keys of
    detection's coco_metrics (map, map50, map75, map_small/medium/large, mar100, per_class_ap; None where
    COCO defines no value) and num_images, num_instances."""
    from faster_coco_eval import COCO, COCOeval_faster

    ground_truth = to_coco_ground_truth(truth, classes)
    masks = [rle for item in truth for rle in _encode(item.masks)]
    for annotation, rle in zip(ground_truth["annotations"], masks, strict=True):
        annotation["segmentation"] = rle
    results = to_coco_detections(found, truth)
    for result, rle in zip(results, [rle for item, pred in zip(truth, found) for rle in _encode(_cut(pred, item))],
                           strict=True):
        result["segmentation"] = rle
    coco = COCO(ground_truth, print_function=_quiet)
    evaluation = COCOeval_faster(coco, coco.loadRes(results), iouType="segm", print_function=_quiet)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    metrics = {name: _defined(evaluation.stats[index]) for name, index in _STATS.items()}
    precision = evaluation.eval["precision"][:, :, :, 0, -1]  # (IoU, recall, class) at area "all", 100 dets
    metrics["per_class_ap"] = {name: _mean_defined(precision[:, :, k]) for k, name in enumerate(classes)}
    return {**metrics, "num_images": len(truth), "num_instances": len(masks)}


def instance_metrics(truth: list[Annotated], found: list[dict], classes: list[str]) -> dict:
    """Mask AP (map, map50, ... as `mask_map`, `mask_map50`, ...; per_class_ap is the masks') and box AP
    (`box_map`, `box_map50`, `box_map75`) of the same objects."""
    boxes = coco_metrics(truth, found, classes)  # first: it checks the labels
    masks = mask_ap(truth, found, classes)
    named = {f"mask_{k}": v for k, v in masks.items() if k.startswith("ma")}
    return {**named, "box_map": boxes["map"], "box_map50": boxes["map50"], "box_map75": boxes["map75"],
            "per_class_ap": masks["per_class_ap"], "num_images": masks["num_images"],
            "num_instances": masks["num_instances"]}


def _cut(pred: dict, item: Annotated) -> np.ndarray:
    masks = np.asarray(pred["masks"])
    masks = masks if masks.dtype == bool else masks > 0.5
    if masks.size and masks.shape[-2:] != (item.height, item.width):
        raise ValueError(f"{item.path.name}: predicted masks are {masks.shape[-2]}x{masks.shape[-1]} but the image "
                         f"is {item.height}x{item.width}: give masks at the image's size")
    return masks.reshape(-1, item.height, item.width)


def _encode(masks: np.ndarray) -> list[dict]:
    """(M, H, W) bool -> COCO RLEs (faster-coco-eval's encoder), counts as text."""
    from faster_coco_eval.core import mask as coco_mask

    if not len(masks):
        return []
    rles = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": rle["size"], "counts": rle["counts"].decode("ascii")} for rle in rles]
