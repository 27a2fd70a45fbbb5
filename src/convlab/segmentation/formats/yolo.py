"""YOLO-seg (Ultralytics) labels, `class x1 y1 x2 y2 x3 y3 ...` normalised to 0-1 per image: `yolo:DATA.yaml` or
`yolo:FOLDER`, laid out as for detection; each polygon becomes an object mask and the class map."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...detection.checks import Checker
from ...detection.formats import yolo as boxes
from ...errors import ConvlabError
from ..targets import Masked
from ._base import Format, Found, paint, register


def read(path: Path, extra: list[str]) -> Found:
    """classes = ["background", *names]: YOLO class c is index c + 1."""
    if extra:
        raise ConvlabError(f"yolo:{path},{','.join(extra)}: a YOLO spec has no extra fields; {boxes.HINT}")
    if path.is_dir() and (path / "data.yaml").is_file():
        path = path / "data.yaml"
    layout = boxes._folder(path) if path.is_dir() else boxes._data_file(path)  # the files, as for detection
    checker = Checker()
    found = Found(layout.root, ["background", *layout.classes], {}, layout.train, layout.test, checker.issues)
    image_id = 0
    for name in [split for split in (layout.train, layout.test) if split]:
        found.splits[name] = []
        for image in layout.images[name]:
            image_id += 1
            size = checker.image_size(image)  # (width, height) as displayed; None: unreadable, listed
            if size is not None:
                found.splits[name].append(_masked(image, size, len(layout.classes), layout.names_file, image_id))
    return found


def _masked(image: Path, size: tuple[int, int], nc: int, names_file: Path, image_id: int) -> Masked:
    """No label file: an image of background only."""
    width, height = size
    label = boxes._label_path(image)
    rows = _polygons(label, nc, names_file) if label.is_file() else []
    instances = np.stack([_fill(points, width, height) for _, points in rows]) if rows else \
        np.zeros((0, height, width), dtype=bool)
    labels = np.array([cls + 1 for cls, _ in rows], dtype=np.int64)
    return Masked(image, paint(instances, labels), instances, labels, image_id)


def _polygons(label: Path, nc: int, names_file: Path) -> list[tuple[int, list[float]]]:
    try:
        lines = label.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConvlabError(f"{label} is not a text file; a YOLO-seg label holds 'class x1 y1 x2 y2 x3 y3 ...' "
                           f"lines") from None
    return [_row(line.split(), f"{label} line {number}", nc, names_file)
            for number, line in enumerate(lines, 1) if line.strip()]


def _row(fields: list[str], where: str, nc: int, names_file: Path) -> tuple[int, list[float]]:
    """'class x1 y1 x2 y2 x3 y3 ...' -> (class, [x1, y1, ...] in 0-1); a box line is refused."""
    if len(fields) == 5:
        raise ConvlabError(f"{where}: 'class cx cy w h' is a box; segmentation needs polygons 'class x1 y1 x2 y2 "
                           f"x3 y3 ...' (for boxes, train with --task detect)")
    if len(fields) < 7 or len(fields) % 2 == 0:
        raise ConvlabError(f"{where}: {len(fields)} fields; expected a polygon 'class x1 y1 x2 y2 x3 y3 ...'")
    try:
        values = [float(field) for field in fields]
    except ValueError:
        raise ConvlabError(f"{where}: {' '.join(fields)[:60]!r} is not numbers; expected 'class x1 y1 x2 y2 "
                           f"x3 y3 ...'") from None
    if not values[0].is_integer() or not 0 <= values[0] < nc:
        raise ConvlabError(f"{where}: class id {fields[0]} is not one of 0..{nc - 1} ({nc} names in "
                           f"{names_file}); fix the label or add the class to the names")
    return int(values[0]), values[1:]


def _fill(points: list[float], width: int, height: int) -> np.ndarray:
    """A normalised polygon -> (H, W) bool, rasterized as COCO's polygons are (faster-coco-eval's mask API,
    vertices on pixel corners), so a COCO polygon divided by the image's size gives the same mask.
    Ultralytics fills with cv2.fillPoly (vertices on pixel centres): its masks can be one pixel wider at the
    right and bottom edges."""
    from faster_coco_eval.core import mask as coco_mask

    pixels = (np.asarray(points).reshape(-1, 2) * [width, height]).ravel().tolist()
    return coco_mask.decode(coco_mask.frPyObjects([pixels], height, width)[0]).astype(bool)


register(Format("yolo", "yolo:DATA.yaml or yolo:FOLDER", read))
