"""What every format module fills in (a reader, a writer, its spec's help) and the helpers they share."""
from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...errors import ConvlabError
from ..checks import Checker
from ..targets import Annotated, DetectionSet


@dataclass
class Found:
    """What a reader found: the dataset's folder, its classes and its splits by the names the files give them.

    `train` and `test` name the splits that play those roles; test is None for a format with one split.
    """

    root: Path
    classes: list[str]
    splits: dict[str, list[Annotated]]
    train: str
    test: str | None = None


@dataclass(frozen=True)
class Format:
    name: str
    spec: str  # the spec's shape, for help texts: "coco:ANNOTATIONS.json[,IMAGES_DIR] or coco:FOLDER"
    read: Callable[[Path, list[str], Checker], Found]  # (path, the spec's extra fields, checker) -> Found
    write: Callable[[DetectionSet, Path], list[str]]  # (dataset, empty folder) -> notes on what it left out


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def roles(names) -> tuple[str | None, str | None]:
    """(train, test) among a dataset's split names: "train" (or a name holding it, e.g. train2017) and "test",
    else "val" (or names holding them), never the same split; a test split found alone plays train."""
    train = _pick(list(names), "train")
    test = _pick([name for name in names if name != train], "test", "val")
    return (train, test) if train else (test, None)


def _pick(names: list[str], *preferred: str) -> str | None:
    """The first of `preferred` that is in `names` (exact), else the first name containing one of them."""
    for wanted in preferred:
        if wanted in names:
            return wanted
    return next((name for wanted in preferred for name in names if wanted in name), None)


def split_name(dataset: DetectionSet, role: str, allowed: tuple[str, ...]) -> str:
    """The name to write a split under: its own when it says its role (holds one of `allowed`), else allowed[0]."""
    own = dataset.split_names.get(role, role)
    return own if any(word in own for word in allowed) else allowed[0]


def place(source: Path, target: Path) -> None:
    """Hard-link an image into the converted dataset (no copy, same bytes), or copy it across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def file_names(items: list[Annotated]) -> list[str]:
    """Each image's file name, made unique by its position where two images share a stem (YOLO and VOC name
    an image's boxes by its stem)."""
    stems = Counter(item.path.stem for item in items)
    return [f"{i:06d}_{item.path.name}" if stems[item.path.stem] > 1 else item.path.name
            for i, item in enumerate(items)]


def number(value: float) -> str:
    """A coordinate as text: 4 decimals at most, none when whole (12, 12.5, 12.3457)."""
    return format(round(float(value), 4), ".12g")


def need(path: Path, what: str, hint: str) -> Path:
    """`path` if it exists, else a one-line error naming it and what to do."""
    if not path.exists():
        raise ConvlabError(f"{what} {path} not found; {hint}")
    return path
