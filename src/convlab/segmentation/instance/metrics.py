"""Mask AP@[.5:.95] and box AP of the same objects, through faster-coco-eval's COCOeval (iouType "segm" and
"bbox"): segmentation's COCO mask dicts with each object's crowd flag kept; nothing is scored by hand here."""
from __future__ import annotations

import numpy as np

from ...detection.metrics import check_predictions, coco_metrics, coco_summary, evaluate_coco
from ...detection.targets import Annotated
from ..metrics import to_coco_mask_ground_truth, to_coco_mask_results
from .targets import as_masked


def mask_ap(truth: list[Annotated], found: list[dict], classes: list[str]) -> dict:
    """COCO mask metrics of `found` (per image of `truth`: "masks" (M, H, W) bool, or probabilities cut at 0.5,
    at the image's size; "labels" 0-based; "scores"): segmentation's mask_ap on Annotated items, whose crowd
    regions (COCO's iscrowd) are matched as COCO matches them instead of counting as objects to find."""
    check_predictions(truth, found, classes, kind="masks")
    masked = [as_masked(item) for item in truth]
    ground_truth = to_coco_mask_ground_truth(masked, classes)
    crowd = np.concatenate([item.iscrowd for item in truth] or [np.zeros(0, np.uint8)])
    for annotation, flag in zip(ground_truth["annotations"], crowd.tolist(), strict=True):
        annotation["iscrowd"] = flag
    metrics = coco_summary(evaluate_coco(ground_truth, to_coco_mask_results(found, masked), "segm"), classes)
    return {**metrics, "num_images": len(truth), "num_instances": len(crowd)}


def instance_metrics(truth: list[Annotated], found: list[dict], classes: list[str]) -> dict:
    """Mask AP (map, map50, ... as `mask_map`, `mask_map50`, ...; per_class_ap is the masks') and box AP
    (`box_map`, `box_map50`, `box_map75`) of the same objects."""
    masks, boxes = mask_ap(truth, found, classes), coco_metrics(truth, found, classes)
    named = {f"mask_{k}": v for k, v in masks.items() if k.startswith("ma")}
    return {**named, "box_map": boxes["map"], "box_map50": boxes["map50"], "box_map75": boxes["map75"],
            "per_class_ap": masks["per_class_ap"], "num_images": masks["num_images"],
            "num_instances": masks["num_instances"]}
