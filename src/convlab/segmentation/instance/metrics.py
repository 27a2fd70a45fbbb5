"""Mask AP@[.5:.95] and box AP of the same objects, both through faster-coco-eval's COCOeval (segmentation's
mask_ap with iouType "segm", detection's coco_metrics with "bbox"); nothing is scored by hand here."""
from __future__ import annotations

from ...detection.metrics import coco_metrics
from ...detection.targets import Annotated
from ..metrics import mask_ap
from .targets import as_masked


def instance_metrics(truth: list[Annotated], found: list[dict], classes: list[str]) -> dict:
    """`found` per image of `truth` ("masks" (M, H, W) bool or probabilities cut at 0.5, at the image's size;
    "boxes", "labels" 0-based, "scores") -> mask AP (mask_map, mask_map50, mask_map75, mask_map_small/medium/
    large, mask_mar100; per_class_ap is the masks') and the box AP of the same objects (box_map, box_map50,
    box_map75)."""
    boxes = coco_metrics(truth, found, classes)  # first: it checks the labels
    masks = mask_ap([as_masked(item) for item in truth], found, classes)
    named = {f"mask_{k}": v for k, v in masks.items() if k.startswith("ma")}
    return {**named, "box_map": boxes["map"], "box_map50": boxes["map50"], "box_map75": boxes["map75"],
            "per_class_ap": masks["per_class_ap"], "num_images": masks["num_images"],
            "num_instances": masks["num_instances"]}
