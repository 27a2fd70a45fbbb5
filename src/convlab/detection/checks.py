"""The checks every image and box gets on load: unreadable images skipped, degenerate boxes dropped, boxes
over the image's edge clipped, each recorded by name (DetectionSet.issues and .box_issues), never a NaN."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import ExifTags

from ..data.decode import ROTATED, UnreadableImage, open_image
from .targets import Annotated

# Overshoots up to this many pixels are clipped without a word: the rounding of normalised formats (YOLO).
CLIPPED = "clipped to the image"  # the problem named for a box cut at the edge (kept; the others are dropped)
CLIP_TOLERANCE = 0.01


def check_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """(K, 4) xyxy boxes of a width x height image -> (keep (K,) bool, boxes clipped to the image (K, 4) float32,
    [(index, problem)] for each box dropped or clipped)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep = np.ones(len(boxes), dtype=bool)
    clipped = np.zeros_like(boxes)
    problems = []
    for index, box in enumerate(boxes):
        problem = _degenerate(box) or _outside(box, width, height)
        if problem:
            keep[index] = False
            problems.append((index, problem))
            continue
        clipped[index] = np.clip(box, 0, [width, height, width, height])
        if np.abs(clipped[index] - box).max() > CLIP_TOLERANCE:
            problems.append((index, CLIPPED))
    return keep, clipped.astype(np.float32), problems


def _degenerate(box: np.ndarray) -> str:
    if not np.isfinite(box).all():
        return f"not 4 finite numbers: {_xyxy(box)}"
    for axis, size in (("width", box[2] - box[0]), ("height", box[3] - box[1])):
        if size <= 0:
            return f"{'zero' if size == 0 else 'negative'} {axis}: {_xyxy(box)}"
    return ""


def _outside(box: np.ndarray, width: int, height: int) -> str:
    if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
        return f"outside the {width} x {height} image: {_xyxy(box)}"
    return ""


def _xyxy(box: np.ndarray) -> str:
    return "xyxy [" + ", ".join(f"{v:g}" for v in box) + "]"


class Checker:
    """Reads image headers and checks boxes for one dataset, collecting what it skipped, dropped or clipped."""

    def __init__(self):
        self.issues: list[dict] = []  # {"path", "problem"}: images skipped
        self.box_issues: list[dict] = []  # {"file", "image", "index", "problem"}: boxes dropped or clipped

    def image_size(self, path: Path) -> tuple[int, int] | None:
        """(width, height) as displayed, from the image's header (nothing decoded), or None with an issue if
        unreadable. An EXIF rotation by 90 degrees swaps them: boxes are drawn on the image as shown (as
        Ultralytics and labelling tools read it), and convlab's decoder applies that rotation too."""
        try:
            with open_image(path) as image:
                turned = image.getexif().get(ExifTags.Base.Orientation, 1) in ROTATED
                return image.size[::-1] if turned else image.size
        except UnreadableImage as err:
            self.issues.append({"path": str(path), "problem": err.reason})
            return None

    def annotated(self, path: Path, boxes, labels, source: Path, iscrowd=None, area=None, image_id: int = 0,
                  normalized: bool = False) -> Annotated | None:
        """One image and its checked boxes, or None (with an issue) if the image cannot be read.

        boxes: (K, 4) xyxy in pixels, or in 0-1 of the image's width and height when `normalized` (YOLO).
        source: the annotation file the boxes came from (named in box_issues, with the box's position among
        that image's boxes in it).
        """
        size = self.image_size(path)
        if size is None:
            return None
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if normalized:
            boxes = boxes * [size[0], size[1], size[0], size[1]]
        keep, boxes, problems = check_boxes(boxes, *size)
        self.box_issues += [{"file": str(source), "image": str(path), "index": index, "problem": problem}
                            for index, problem in problems]
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)[keep]
        iscrowd = None if iscrowd is None else np.asarray(iscrowd, dtype=np.uint8).reshape(-1)[keep]
        area = None if area is None else np.asarray(area, dtype=np.float32).reshape(-1)[keep]
        return Annotated(path, size[0], size[1], boxes[keep], labels, iscrowd, area, image_id)


def describe(issue: dict) -> str:
    """One warning line for a box_issues or issues entry."""
    if "index" in issue:
        return f"{issue['file']}: box {issue['index']} of {issue['image']}: {issue['problem']}"
    return f"{issue['path']}: skipped: {issue['problem']}"
