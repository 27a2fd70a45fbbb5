"""Objects with masks as detection's `Annotated` items: a box derived from each instance mask, so the detector's
loader, checks, transforms and COCO plumbing take them as they are."""
from __future__ import annotations

import numpy as np

from ...detection.targets import Annotated, DetectionSet
from ..targets import Masked, SegmentationSet


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (K, 4) float32 tight xyxy boxes in pixel corners (a mask over columns 0..9 has
    x1 = 0, x2 = 10, as detection's boxes); an empty mask gets [0, 0, 0, 0]."""
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for k, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size:
            boxes[k] = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    return boxes


def outlined(path, masks: np.ndarray, labels: np.ndarray, iscrowd=None, image_id: int = 0) -> Annotated:
    """An image's instance masks (K, H, W) bool and 0-based labels -> an Annotated item with their boxes, areas
    (mask pixels, as COCO's) and masks; empty masks are no objects and are left out."""
    masks = np.asarray(masks, dtype=bool)
    height, width = masks.shape[-2:]
    seen = masks.reshape(len(masks), -1).any(axis=1)
    crowd = None if iscrowd is None else np.asarray(iscrowd, dtype=np.uint8)[seen]
    masks = masks[seen]
    return Annotated(path, width, height, mask_boxes(masks), np.asarray(labels, dtype=np.int64)[seen], crowd,
                     masks.sum(axis=(1, 2)).astype(np.float32), image_id, masks)


def from_segmentation(found: SegmentationSet) -> DetectionSet:
    """A segmentation set with instance masks -> its objects as a DetectionSet; a "background" class 0 (the
    class maps' index) is left out of the classes, labels shifted down to detection's 0-based convention."""
    shift = 1 if found.classes[:1] == ["background"] else 0

    def convert(item: Masked) -> Annotated:
        if item.instances is None:
            raise ValueError(f"{item.path}: a class map only; instance segmentation needs one mask per object")
        return outlined(item.path, item.instances, item.labels - shift, image_id=item.image_id)

    return DetectionSet(found.name, found.classes[shift:], [convert(i) for i in found.train],
                        [convert(i) for i in found.test], list(found.issues), notes=list(found.notes),
                        split_names=dict(found.split_names))


def as_masked(item: Annotated) -> Masked:
    """An Annotated item with masks -> segmentation's Masked (class map: label + 1 where an object is, 0
    elsewhere), what the mask metrics read."""
    class_map = np.zeros((item.height, item.width), dtype=np.uint8)
    for mask, label in zip(item.masks, item.labels):
        class_map[mask] = label + 1
    return Masked(item.path, class_map, item.masks, item.labels, item.image_id)
