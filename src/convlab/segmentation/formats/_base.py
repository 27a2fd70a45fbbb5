"""What every segmentation format module fills in (a reader and its spec's help) and what they share: the
class names of a folder and the painting of object masks into one class map."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...detection.formats.yolo import _load as load_yaml
from ...detection.formats.yolo import _names as yaml_names
from ..targets import IGNORE, Masked


@dataclass
class Found:
    """What a reader found: the dataset's folder, its classes (index 0 the background) and its splits by the
    names the files give them; test is None for a format with one split. issues: files skipped; notes: said
    once when the data is loaded."""

    root: Path
    classes: list[str]
    splits: dict[str, list[Masked]]
    train: str
    test: str | None = None
    issues: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Format:
    name: str
    spec: str  # the spec's shape, for help texts: "masks:DIR"
    read: Callable[[Path, list[str]], Found]  # (path, the spec's extra fields) -> Found


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def class_names(root: Path) -> tuple[list[str] | None, Path | None]:
    """root/classes.txt (one name a line) or root/data.yaml's names: (a list, or a dict 0: name, ...), and the
    file they came from; (None, None) when there is neither."""
    if (root / "classes.txt").is_file():
        file = root / "classes.txt"
        return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()], file
    if (root / "data.yaml").is_file():
        file = root / "data.yaml"
        return yaml_names(load_yaml(file), file), file
    return None, None


def paint(instances: np.ndarray, labels: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """Object masks (K, H, W) bool with their class indices (K,) -> the class map (H, W) uint8.

    A pixel claimed by objects of two classes is IGNORE (torchvision's segmentation reference ignores every
    overlap; one class claimed twice is still that class); `crowd` (H, W) bool, COCO's crowd regions, is IGNORE
    where no single object claims it. 0 elsewhere: the background.
    """
    height, width = instances.shape[1:]
    mask = np.zeros((height, width), dtype=np.uint8)
    claims = np.zeros((height, width), dtype=np.int32)  # how many classes claim each pixel
    for label in np.unique(labels):
        region = instances[labels == label].any(axis=0)
        mask[region] = label
        claims += region
    mask[claims > 1] = IGNORE
    if crowd is not None:
        mask[crowd & (claims == 0)] = IGNORE
    return mask
