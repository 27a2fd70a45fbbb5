"""`convlab convert`: read a detection dataset in one format and write it in another, splits kept."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConvlabError
from .formats import FORMATS, read_detection
from .targets import DetectionSet


def convert(source: str, to: str, out: str | Path, seed: int = 0,
            test_fraction: float = 0.2) -> tuple[DetectionSet, list[str]]:
    """Write the dataset `source` (a coco:/yolo:/voc: spec) as format `to` into the new or empty folder `out`
    (images hard-linked where the file system allows, else copied) -> (the dataset as read, the writer's notes).

    A source with one split is split by image with `seed` first, so the converted dataset has both splits.
    """
    if to not in FORMATS:
        raise ConvlabError(f"--to {to!r} is not a detection format; give one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConvlabError(f"--out {out} is not an empty folder; give a new or empty one (nothing is overwritten)")
    dataset = read_detection(source, seed, test_fraction)
    out.mkdir(parents=True, exist_ok=True)
    return dataset, FORMATS[to].write(dataset, out)


def summary(dataset: DetectionSet, to: str, out: str | Path) -> str:
    """One line: what was written where, per split, and what the checks dropped or skipped."""
    splits = ", ".join(f"{dataset.split_names[role]} {_count(len(items), 'image')} / "
                       f"{_count(sum(map(len, items)), 'box')}"
                       for role, items in (("train", dataset.train), ("test", dataset.test)))
    line = f"wrote {dataset.name} as {to} to {out}: {_count(len(dataset.classes), 'class')}, {splits}"
    dropped = sum(1 for issue in dataset.box_issues if issue["problem"] != "clipped to the image")
    clipped = len(dataset.box_issues) - dropped
    counts = [f"{_count(n, what)} {how}" for n, what, how in ((dropped, "box", "dropped"), (clipped, "box", "clipped"),
                                                             (len(dataset.issues), "image", "skipped")) if n]
    return line + (f" ({', '.join(counts)})" if counts else "")


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith(('s', 'x')) else 's'}"
