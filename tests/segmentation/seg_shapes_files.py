"""Generated shape masks written by hand in each format's own conventions (COCO polygons and RLE, YOLO-seg
polygons), independent of convlab's readers, and the comparison of two datasets' targets the format tests share."""
import json
import shutil

import numpy as np
import yaml
from pycocotools import mask as coco_mask  # the reference encoder, not the one the reader decodes with

SPLITS = ("train", "test")


def outline(region):
    """The boundary of a region whose rows are each one run of pixels, on pixel corners (x0..x1 inclusive becomes
    x0 and x1 + 1): down the right side, up the left. Squares, discs and triangles are such regions."""
    rows = np.flatnonzero(region.any(axis=1))
    assert (np.diff(rows) == 1).all(), "the rows of a region are contiguous"
    runs = []
    for y in rows:
        xs = np.flatnonzero(region[y])
        assert xs[-1] - xs[0] + 1 == len(xs), "one run of pixels a row"
        runs.append((int(y), int(xs[0]), int(xs[-1]) + 1))
    right = [point for y, _, x1 in runs for point in ((x1, y), (x1, y + 1))]
    left = [point for y, x0, _ in reversed(runs) for point in ((x0, y + 1), (x0, y))]
    return [float(v) for point in right + left for v in point]


def rle(region, compressed=True):
    """COCO RLE of a (H, W) bool region: compressed (counts a string) or uncompressed (counts a list)."""
    encoded = coco_mask.encode(np.asfortranarray(region.astype(np.uint8)))
    if compressed:
        return {"size": encoded["size"], "counts": encoded["counts"].decode()}
    flat, counts, value, run = region.ravel(order="F"), [], False, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    return {"size": list(region.shape), "counts": counts + [run]}


def by_hand_coco(dataset, folder, polygons=True):
    """folder/annotations/instances_<split>.json (category ids 5, 7, 9: not 0-based) and folder/<split>/; each
    object a polygon (`polygons`, row-convex objects only) except the first (compressed RLE) and second
    (uncompressed RLE), or every object an RLE."""
    categories = [{"id": 3 + 2 * i, "name": name} for i, name in enumerate(dataset.classes) if i > 0]
    ann_id = 0
    for split in SPLITS:
        images, annotations = [], []
        (folder / split).mkdir(parents=True, exist_ok=True)
        for item in getattr(dataset, split):
            shutil.copy(item.path, folder / split / item.path.name)
            images.append({"id": item.image_id, "file_name": item.path.name, "width": item.width,
                           "height": item.height})
            for region, label in zip(item.instances, item.labels.tolist()):
                ann_id += 1
                segm = [outline(region)] if polygons and ann_id > 2 else rle(region, compressed=ann_id != 2)
                annotations.append({"id": ann_id, "image_id": item.image_id, "category_id": 3 + 2 * label,
                                    "bbox": [0, 0, 1, 1], "area": int(region.sum()), "iscrowd": 0,
                                    "segmentation": segm})
        (folder / "annotations").mkdir(parents=True, exist_ok=True)
        (folder / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def by_hand_yolo(dataset, folder):
    """folder/data.yaml (names without the background), images/<split>/, labels/<split>/ ('class x1 y1 ...',
    0-1, class 0 the first object class)."""
    for split in SPLITS:
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for item in getattr(dataset, split):
            shutil.copy(item.path, folder / "images" / split / item.path.name)
            lines = []
            for region, label in zip(item.instances, item.labels.tolist()):
                points = np.array(outline(region)).reshape(-1, 2) / [item.width, item.height]
                lines.append(f"{label - 1} " + " ".join(repr(float(v)) for v in points.ravel()))
            (folder / "labels" / split / f"{item.path.stem}.txt").write_text("\n".join(lines) + "\n")
    (folder / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "val": "images/test",
                                                      "names": dataset.classes[1:]}))


BY_HAND = {"coco": by_hand_coco, "yolo": by_hand_yolo}


def assert_same_targets(read, made, instances=True):
    """Same classes, splits, image names and masks (and object masks with their labels, where both have them)."""
    assert read.classes == made.classes
    for split in SPLITS:
        got, want = getattr(read, split), getattr(made, split)
        assert [item.path.name for item in got] == [item.path.name for item in want]
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.mask, b.mask, err_msg=str(a.path))
            if instances:
                np.testing.assert_array_equal(a.instances, b.instances, err_msg=str(a.path))
                np.testing.assert_array_equal(a.labels, b.labels, err_msg=str(a.path))
