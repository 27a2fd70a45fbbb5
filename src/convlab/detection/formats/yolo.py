"""YOLO (Ultralytics) labels, `class cx cy w h` normalised to 0-1 per image: `yolo:DATA.yaml` or `yolo:FOLDER`
with images/ and labels/ (split subfolders or flat), read and written."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from ...data.decode import list_images
from ...errors import ConvlabError
from ..checks import Checker
from ..targets import Annotated, DetectionSet
from ._base import Format, Found, file_names, need, place, register, roles, split_name

HINT = "give yolo:DATA.yaml or yolo:FOLDER with images/, labels/ and a data.yaml or classes.txt"
KEYS = ("train", "val", "test")


def read(path: Path, extra: list[str], checker: Checker) -> Found:
    if extra:
        raise ConvlabError(f"yolo:{path},{','.join(extra)}: a YOLO spec has no extra fields; {HINT}")
    if path.is_dir() and (path / "data.yaml").is_file():
        path = path / "data.yaml"
    layout = _folder(path) if path.is_dir() else _data_file(path)
    found = Found(layout.root, layout.classes, {}, layout.train, layout.test)
    for name in [split for split in (layout.train, layout.test) if split]:
        found.splits[name] = _annotated(layout.images[name], layout.classes, layout.names_file, checker,
                                        first_id=sum(map(len, found.splits.values())) + 1)
    return found


class Layout(NamedTuple):
    """Where a YOLO dataset's parts are, before any label is read."""

    root: Path
    classes: list[str]
    names_file: Path  # where the class names came from (named when a class id is out of range)
    images: dict[str, list[Path]]  # split name -> its images
    train: str
    test: str | None


def _data_file(path: Path) -> Layout:
    config = _load(path)
    # `path:` relative to the yaml's folder, else (as Ultralytics reads it) to the working directory
    given = str(config.get("path") or "")
    root = next((where for where in (path.parent / given, Path(given)) if given and where.is_dir()), path.parent / given)
    classes = _names(config, path)
    found = {key: _images(root, config[key], path, key) for key in KEYS if config.get(key)}
    if not found:
        raise ConvlabError(f"{path} has no train: or val: key; name the image folders, e.g. 'train: images/train'")
    names = {key: _split_name(key, config[key]) for key in found}
    test = names.get("test", names.get("val"))
    train = names.get("train", test)
    return Layout(root, classes, path, {names[key]: images for key, images in found.items()}, train,
                  test if train != test else None)


def _folder(root: Path) -> Layout:
    """FOLDER with images/ (split subfolders or flat), labels/ and classes.txt -> as _data_file."""
    names_file = need(root / "classes.txt", "class names file",
                      f"{root} has no data.yaml: write the class names one per line into {root / 'classes.txt'}")
    classes = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    images = need(root / "images", "images folder", HINT)
    folders = sorted(folder for folder in images.iterdir() if folder.is_dir() and not folder.name.startswith("."))
    splits = {folder.name: list_images(folder) for folder in folders} or {"train": list_images(images)}
    train, test = roles(splits)
    return Layout(root, classes, names_file, splits, train or next(iter(splits)), test)


def _annotated(images: list[Path], classes: list[str], names_file: Path, checker: Checker,
               first_id: int) -> list[Annotated]:
    items = []
    for image_id, image in enumerate(images, first_id):
        label = _label_path(image)
        boxes, labels = _parse(label, len(classes), names_file)
        item = checker.annotated(image, boxes, labels, source=label, image_id=image_id, normalized=True)
        items += [item] if item is not None else []
    return items


def _label_path(image: Path) -> Path:
    """Ultralytics' rule: the last images/ folder of the path becomes labels/, the suffix .txt."""
    parts = list(image.parts)
    last = max((i for i, part in enumerate(parts[:-1]) if part == "images"), default=None)
    if last is not None:
        parts[last] = "labels"
    return Path(*parts).with_suffix(".txt")


def _parse(label: Path, nc: int, names_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """A label file -> normalised xyxy boxes (K, 4) and class ids (K,); no file: a negative image."""
    if not label.is_file():
        return np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    try:
        lines = label.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConvlabError(f"{label} is not a text file; a YOLO label file holds 'class cx cy w h' lines") from None
    rows = [_row(line.split(), label, number, nc, names_file) for number, line in enumerate(lines, 1) if line.strip()]
    boxes = np.array([box for _, box in rows], dtype=np.float64).reshape(-1, 4)
    return boxes, np.array([cls for cls, _ in rows], dtype=np.int64)


def _row(fields: list[str], label: Path, number: int, nc: int, names_file: Path) -> tuple[int, list[float]]:
    """One line: 'class cx cy w h', or 'class x1 y1 x2 y2 ...' (a segment: its box is taken)."""
    where = f"{label} line {number}"
    if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
        raise ConvlabError(f"{where}: {len(fields)} fields; expected 'class cx cy w h' or a polygon 'class x1 y1 "
                           f"x2 y2 x3 y3 ...'")
    try:
        values = [float(field) for field in fields]
    except ValueError:
        raise ConvlabError(f"{where}: {' '.join(fields)!r} is not numbers; expected 'class cx cy w h'") from None
    if not values[0].is_integer() or not 0 <= values[0] < nc:
        raise ConvlabError(f"{where}: class id {fields[0]} is not one of 0..{nc - 1} ({nc} names in "
                           f"{names_file}); fix the label or add the class to the names")
    if len(values) == 5:
        cx, cy, w, h = values[1:]
        return int(values[0]), [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    xs, ys = values[1::2], values[2::2]
    return int(values[0]), [min(xs), min(ys), max(xs), max(ys)]


def _load(path: Path) -> dict:
    need(path, "YOLO data file", HINT)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConvlabError(f"{path} is not valid YAML ({' '.join(str(err).split())}); fix the file") from None
    if not isinstance(config, dict):
        raise ConvlabError(f"{path} is not a YOLO data file (no keys); it needs train:, val: and names:")
    return config


def _names(config: dict, path: Path) -> list[str]:
    names = config.get("names")
    if isinstance(names, dict) and sorted(names) == list(range(len(names))):
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise ConvlabError(f"{path}: names: must list the class names (a list, or a dict 0: name, 1: name, ...), "
                           f"got {names!r}")
    if config.get("nc") is not None and config["nc"] != len(names):
        raise ConvlabError(f"{path}: nc: {config['nc']} but names: has {len(names)} names; make them agree")
    return [str(name) for name in names]


def _images(root: Path, value, path: Path, key: str) -> list[Path]:
    """A split's images: a folder, a .txt file listing images, or a list of those."""
    images = []
    for entry in value if isinstance(value, list) else [value]:
        where = root / str(entry)
        if where.is_dir():
            images += list_images(where)
        elif where.suffix == ".txt" and where.is_file():
            lines = [line.strip() for line in where.read_text(encoding="utf-8").splitlines() if line.strip()]
            images += [where.parent / line for line in lines]
        else:
            raise ConvlabError(f"{path}: {key}: {where} not found; give a folder of images or a .txt list, "
                               f"relative to {root}")
    return images


def _split_name(key: str, value) -> str:
    """The split's folder name where it says its role (images/train2017 -> train2017), else the key."""
    name = Path(str(value[0] if isinstance(value, list) else value)).name
    return name if key in name else key


def write(dataset: DetectionSet, out: Path) -> list[str]:
    """images/<split>/, labels/<split>/ (an empty file for a negative) and data.yaml; crowd boxes are left out,
    as Ultralytics' own COCO converter does: YOLO has no crowd flag."""
    config, crowd = {}, 0
    for role, items, allowed in (("train", dataset.train, ("train",)), ("test", dataset.test, ("val", "test"))):
        name = split_name(dataset, role, allowed)
        for item, file_name in zip(items, file_names(items)):
            place(item.path, out / "images" / name / file_name)
            label = out / "labels" / name / Path(file_name).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(_line(item, k) for k in range(len(item)) if not item.iscrowd[k]))
            crowd += int(item.iscrowd.sum())
        config["train" if role == "train" else "test" if "test" in name else "val"] = f"images/{name}"
    config.update(nc=len(dataset.classes), names=dict(enumerate(dataset.classes)))
    (out / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return [f"{crowd} crowd (or VOC difficult) boxes left out: YOLO has no crowd flag"] if crowd else []


def _line(item: Annotated, k: int) -> str:
    x1, y1, x2, y2 = (float(v) for v in item.boxes[k])
    values = ((x1 + x2) / 2 / item.width, (y1 + y2) / 2 / item.height, (x2 - x1) / item.width,
              (y2 - y1) / item.height)
    return f"{item.labels[k]} " + " ".join(f"{v:.8g}" for v in values) + "\n"


register(Format("yolo", "yolo:DATA.yaml or yolo:FOLDER", read, write))
