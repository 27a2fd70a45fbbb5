"""Detection datasets in their files: the formats by name (FORMATS: coco, yolo, voc) and `read_detection`, which
reads any of them into one checked DetectionSet."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.splits import stratified_split
from ...errors import ConvlabError
from ..checks import Checker
from ..targets import DetectionSet
from . import coco, voc, yolo  # noqa: F401  (each registers its format)
from ._base import FORMATS, Format

__all__ = ["FORMATS", "Format", "is_detection_spec", "parse_spec", "read_detection"]


def is_detection_spec(spec: str) -> bool:
    """True for 'coco:...', 'yolo:...' and 'voc:...' (any registered format's prefix)."""
    return spec.partition(":")[0] in FORMATS


def parse_spec(spec: str) -> tuple[Format, Path, list[str]]:
    """'coco:PATH[,EXTRA...]' -> (the format, PATH, [EXTRA...]); a missing PATH is a one-line error."""
    name, _, rest = spec.partition(":")
    if name not in FORMATS:
        raise ConvlabError(f"{spec!r} is not a detection dataset; give {' or '.join(f.spec for f in FORMATS.values())}")
    path, *extra = rest.split(",")
    if not path or not Path(path).expanduser().exists():
        raise ConvlabError(f"{spec}: {path or 'no path'} not found; give {FORMATS[name].spec}")
    return FORMATS[name], Path(path).expanduser(), extra


def read_detection(spec: str, seed: int = 0, test_fraction: float = 0.2) -> DetectionSet:
    """Read a detection dataset; every image header and box is checked (checks.py). A format with one split is
    split by image with `seed`, `test_fraction` of the images held out as the test split (said in notes)."""
    fmt, path, extra = parse_spec(spec)
    checker = Checker()
    found = fmt.read(path, extra, checker)
    if not any(found.splits.values()):
        first = f" ({checker.issues[0]['path']}: {checker.issues[0]['problem']})" if checker.issues else ""
        raise ConvlabError(f"{spec}: no readable image{first}; give {fmt.spec}")
    root = found.root.resolve()
    name = root.parent.name if root.name == fmt.name else root.name  # pennfudan/coco -> pennfudan
    dataset = DetectionSet(name, found.classes, found.splits[found.train], found.splits.get(found.test, []),
                           checker.issues, checker.box_issues,
                           split_names={"train": found.train, "test": found.test or "test"})
    if found.test is None:
        _split_by_image(dataset, seed, test_fraction)
    return dataset


def _split_by_image(dataset: DetectionSet, seed: int, fraction: float) -> None:
    items = dataset.train
    keep, held = stratified_split(np.zeros(len(items)), fraction, seed) if len(items) > 1 else ([0], [])
    dataset.train, dataset.test = [items[i] for i in keep], [items[i] for i in held]
    dataset.notes.append(f"{dataset.name} has one split ({dataset.split_names['train']}): {len(held)} of "
                         f"{len(items)} images held out as the test split, by image with seed {seed}")
