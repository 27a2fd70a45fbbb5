"""Segmentation datasets in their files: the formats by name (FORMATS: masks, coco, yolo) and `read_segmentation`,
which reads any of them into one SegmentationSet."""
from __future__ import annotations

from pathlib import Path

from ...detection.formats import _split_by_image
from ...errors import ConvlabError
from ..targets import SegmentationSet
from . import coco, masks, yolo  # noqa: F401  (each registers its format)
from ._base import FORMATS, Format

__all__ = ["FORMATS", "TEST_FRACTION", "Format", "read_segmentation"]

TEST_FRACTION = 0.2  # held out as the test split when the files have one split (as for detection)


def read_segmentation(spec: str, seed: int = 0, test_fraction: float = TEST_FRACTION) -> SegmentationSet:
    """Read 'masks:DIR', 'coco:...' or 'yolo:...' into a SegmentationSet: every mask checked against its image
    (size, class indices). A format with one split is split by image with `seed`, `test_fraction` of the images
    held out as the test split (said in notes)."""
    fmt, path, extra = _parse(spec)
    found = fmt.read(path, extra)
    if not any(found.splits.values()):
        first = f" ({found.issues[0]['path']}: {found.issues[0]['problem']})" if found.issues else ""
        raise ConvlabError(f"{spec}: no readable image{first}; give {fmt.spec}")
    root = found.root.resolve()
    name = root.parent.name if root.name == fmt.name else root.name  # pennfudan/coco -> pennfudan
    dataset = SegmentationSet(name, found.classes, found.splits[found.train], found.splits.get(found.test, []),
                              found.issues, found.notes,
                              split_names={"train": found.train, "test": found.test or "test"})
    if found.test is None:
        _split_by_image(dataset, seed, test_fraction)
    return dataset


def _parse(spec: str) -> tuple[Format, Path, list[str]]:
    """'masks:PATH[,EXTRA...]' -> (the format, PATH, [EXTRA...]); an unknown format or a missing PATH is a
    one-line error."""
    name, _, rest = spec.partition(":")
    if name not in FORMATS:
        raise ConvlabError(f"{spec!r} is not a segmentation dataset; give "
                           f"{' or '.join(fmt.spec for fmt in FORMATS.values())}")
    path, *extra = rest.split(",")
    if not path or not Path(path).expanduser().exists():
        raise ConvlabError(f"{spec}: {path or 'no path'} not found; give {FORMATS[name].spec}")
    return FORMATS[name], Path(path).expanduser(), extra
