"""COCO instances JSON: `coco:ANNOTATIONS.json[,IMAGES_DIR]` (one split) or `coco:FOLDER` (its
annotations/instances_*.json, one split each), read and written."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ...errors import ConvlabError
from ..checks import Checker
from ..targets import Annotated, DetectionSet
from ._base import Format, Found, file_names, need, place, register, roles, split_name

HINT = "give coco:ANNOTATIONS.json[,IMAGES_DIR] or coco:FOLDER with annotations/instances_*.json"


def read(path: Path, extra: list[str], checker: Checker) -> Found:
    if len(extra) > 1:
        raise ConvlabError(f"coco:{path},{','.join(extra)}: too many fields; {HINT}")
    if path.is_dir():
        return _read_folder(path, extra, checker)
    root = path.parent.parent if path.parent.name == "annotations" else path.parent
    name = _split_of(path)
    folders = [Path(extra[0]).expanduser()] if extra else [path.parent, root / "images", root / name,
                                                          root / "images" / name]
    classes, items = _read_json(path, folders, checker)
    return Found(root, classes, {name: items}, train=name)


def _read_folder(root: Path, extra: list[str], checker: Checker) -> Found:
    if extra:
        raise ConvlabError(f"coco:{root},{extra[0]}: an images folder goes with a JSON file, not a folder; {HINT}")
    files = {_split_of(file): file for file in sorted((root / "annotations").glob("instances_*.json"))}
    train, test = roles(files)
    if train is None:
        raise ConvlabError(f"no annotations/instances_*train*.json or *val*.json in {root}; {HINT}")
    splits, classes = {}, None
    for name in [split for split in (train, test) if split]:
        folders = [root / name, root / "images" / name, root / "images", root]
        found, splits[name] = _read_json(files[name], folders, checker)
        if classes is not None and found != classes:
            raise ConvlabError(f"{files[name]} has other categories than {files[train]}; give both splits the "
                               f"same categories")
        classes = found
    return Found(root, classes, splits, train, test)


def _split_of(file: Path) -> str:
    return file.stem.removeprefix("instances_")


def _read_json(path: Path, folders: list[Path], checker: Checker) -> tuple[list[str], list[Annotated]]:
    data = _load(path)
    categories = sorted(data["categories"], key=lambda category: category["id"])
    index = {category["id"]: i for i, category in enumerate(categories)}
    by_image = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        if ann.get("category_id") not in index:
            raise ConvlabError(f"{path}: annotation {ann.get('id')} has category_id {ann.get('category_id')}, "
                               f"which is not among its categories (ids {sorted(index)}); add the category or "
                               f"remove the annotation")
        if ann.get("image_id") not in by_image:
            raise ConvlabError(f"{path}: annotation {ann.get('id')} has image_id {ann.get('image_id')}, which is "
                               f"not among its images; add the image or remove the annotation")
        by_image[ann["image_id"]].append(ann)
    folder = _images_folder(path, data["images"], folders)
    items = []
    for image in data["images"]:
        boxes, labels, iscrowd, area = _targets(by_image[image["id"]], index)
        items.append(checker.annotated(folder / image["file_name"], boxes, labels, source=path, iscrowd=iscrowd,
                                       area=area, image_id=image["id"]))
    return [category["name"] for category in categories], [item for item in items if item is not None]


def _load(path: Path) -> dict:
    need(path, "COCO annotation file", HINT)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConvlabError(f"{path} is not valid JSON ({err}); fix the file or export it again") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise ConvlabError(f"{path} is not a COCO instances file: no '{key}' list; give the instances_*.json "
                               f"that holds the boxes")
    for key, fields in (("images", ("id", "file_name")), ("categories", ("id", "name"))):
        bad = next((entry for entry in data[key]
                    if not (isinstance(entry, dict) and all(field in entry for field in fields))), None)
        if bad is not None:
            raise ConvlabError(f"{path}: an entry of '{key}' has no {' or '.join(fields)} ({str(bad)[:80]}); "
                               f"fix the file or export it again")
    return data


def _images_folder(path: Path, images: list[dict], folders: list[Path]) -> Path:
    """The first of `folders` that holds the first image (the others are then looked for there too)."""
    if not images:
        return folders[0]
    name = images[0]["file_name"]
    found = next((folder for folder in folders if (folder / name).is_file()), None)
    if found is None:
        raise ConvlabError(f"image {name} of {path} not found in {', '.join(str(f) for f in folders)}; give the "
                           f"images folder: coco:{path},IMAGES_DIR")
    return found


def _targets(anns: list[dict], index: dict[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An image's annotations -> boxes xyxy (NaN for a bbox that is not 4 numbers), labels, iscrowd, area."""
    boxes = np.array([_xyxy(ann.get("bbox")) for ann in anns], dtype=np.float64).reshape(-1, 4)
    labels = [index[ann["category_id"]] for ann in anns]
    iscrowd = [int(ann.get("iscrowd") or 0) for ann in anns]
    area = [_area(ann.get("area"), box) for ann, box in zip(anns, boxes)]
    return boxes, labels, iscrowd, area


def _xyxy(bbox) -> list[float]:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return [math.nan] * 4
    return [x, y, x + w, y + h]


def _area(area, box: np.ndarray) -> float:
    """The file's area (a segmentation's), else the box's: never NaN."""
    if isinstance(area, (int, float)) and math.isfinite(area):
        return float(area)
    size = (box[2] - box[0]) * (box[3] - box[1])
    return float(size) if math.isfinite(size) else 0.0


def write(dataset: DetectionSet, out: Path) -> list[str]:
    """annotations/instances_<split>.json and <split>/ images; category ids 1..C in the classes' order."""
    categories = [{"id": i + 1, "name": name, "supercategory": name} for i, name in enumerate(dataset.classes)]
    ids = _image_ids(dataset.train + dataset.test)
    for role, items, allowed in (("train", dataset.train, ("train",)), ("test", dataset.test, ("val", "test"))):
        name = split_name(dataset, role, allowed)
        images, annotations = [], []
        for item, file_name in zip(items, file_names(items)):
            place(item.path, out / name / file_name)
            image_id = ids[id(item)]
            images.append({"id": image_id, "file_name": file_name, "width": item.width, "height": item.height})
            annotations += [_annotation(len(annotations) + k + 1, image_id, item, k) for k in range(len(item))]
        target = out / "annotations" / f"instances_{name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return []


def _image_ids(items: list[Annotated]) -> dict[int, int]:
    """The images' own ids where they are positive and unique, else 1..N."""
    own = [item.image_id for item in items]
    keep = all(i > 0 for i in own) and len(set(own)) == len(own)
    return {id(item): item.image_id if keep else n + 1 for n, item in enumerate(items)}


def _annotation(ann_id: int, image_id: int, item: Annotated, k: int) -> dict:
    x1, y1, x2, y2 = (round(float(v), 4) for v in item.boxes[k])
    return {"id": ann_id, "image_id": image_id, "category_id": int(item.labels[k]) + 1,
            "bbox": [x1, y1, round(x2 - x1, 4), round(y2 - y1, 4)], "area": round(float(item.area[k]), 4),
            "iscrowd": int(item.iscrowd[k]), "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]}


register(Format("coco", "coco:ANNOTATIONS.json[,IMAGES_DIR] or coco:FOLDER", read, write))
