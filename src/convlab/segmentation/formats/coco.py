"""COCO instances JSON read for segmentation: `coco:ANNOTATIONS.json[,IMAGES_DIR]` or `coco:FOLDER`, found and
checked as for detection; each annotation's polygons or RLE become an object mask and the class map."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...detection.checks import Checker
from ...detection.formats import coco as boxes
from ...detection.targets import Annotated
from ...errors import ConvlabError
from ..targets import Masked
from ._base import Format, Found, paint, register


def read(path: Path, extra: list[str]) -> Found:
    """classes = ["background", *the categories by id]; a crowd region is IGNORE in the class map and no object."""
    checker = Checker()
    layout = boxes.read(path, extra, checker)  # the files, the images found and their headers, as for detection
    found = Found(layout.root, ["background", *layout.classes], {}, layout.train, layout.test, checker.issues)
    left_out = 0
    for name, items in layout.splits.items():
        source = path if path.is_file() else layout.root / "annotations" / f"instances_{name}.json"
        data = boxes._load(source)
        index = {category["id"]: i + 1 for i, category in
                 enumerate(sorted(data["categories"], key=lambda category: category["id"]))}
        by_image = {image["id"]: [] for image in data["images"]}
        for ann in data["annotations"]:
            if ann.get("segmentation"):
                by_image[ann["image_id"]].append(ann)
            left_out += not ann.get("segmentation")
        found.splits[name] = [_masked(item, by_image[item.image_id], index, source) for item in items]
    if left_out:
        found.notes.append(f"{left_out} COCO annotations without a segmentation left out (boxes only)")
    return found


def _masked(item: Annotated, anns: list[dict], index: dict[int, int], source: Path) -> Masked:
    height, width = item.height, item.width
    objects, labels, crowd = [], [], np.zeros((height, width), dtype=bool)
    for ann in anns:
        region = _region(ann, height, width, source)
        if ann.get("iscrowd"):
            crowd |= region
        else:
            objects.append(region)
            labels.append(index[ann["category_id"]])
    instances = np.stack(objects) if objects else np.zeros((0, height, width), dtype=bool)
    labels = np.array(labels, dtype=np.int64)
    return Masked(item.path, paint(instances, labels, crowd), instances, labels, item.image_id)


def _region(ann: dict, height: int, width: int, source: Path) -> np.ndarray:
    """An annotation's segmentation (polygons, RLE or compressed RLE) -> (H, W) bool, rasterized by
    faster-coco-eval's mask API (pycocotools' C code: polygon vertices on pixel corners, so a polygon around
    pixels x..x+w-1 covers exactly them)."""
    from faster_coco_eval.core import mask as coco_mask

    segm, where = ann["segmentation"], f"{source}: annotation {ann.get('id')}"
    if isinstance(segm, dict):
        if list(segm.get("size") or []) != [height, width]:
            raise ConvlabError(f"{where}: its RLE mask is of size {segm.get('size')} (height, width) but its image "
                               f"is {height} x {width}; a mask must match its image (export the annotations again)")
    elif not (isinstance(segm, list) and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0
                                             for p in segm)):
        raise ConvlabError(f"{where}: segmentation {str(segm)[:60]} is neither polygons [[x1, y1, x2, y2, x3, y3, "
                           f"...], ...] nor an RLE {{'size', 'counts'}}; fix the file or export it again")
    try:
        return coco_mask.decode(coco_mask.segmToRle(segm, width, height)).astype(bool)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ConvlabError(f"{where}: its segmentation cannot be read ({err}); fix the file or export it "
                           f"again") from None


register(Format("coco", "coco:ANNOTATIONS.json[,IMAGES_DIR] or coco:FOLDER", read))
