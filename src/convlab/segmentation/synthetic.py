"""Generated shapes with exact masks: the small segmentation data of the tests and of a learner's first run,
written in the mask-folder layout (`masks:DIR`) so the readers are tested on it too."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .targets import Masked, SegmentationSet

CLASSES = ["background", "square", "disc", "triangle"]


def make_shape_masks(folder: str | Path, n_train: int = 48, n_test: int = 16, size: int = 64, seed: int = 0,
                     max_objects: int = 3) -> SegmentationSet:
    """Draw n_train + n_test RGB PNGs of size x size with 1 to `max_objects` coloured shapes on a noisy
    background into `folder`/{train,test}/images, their class-index masks (mode L PNG) into .../masks, and
    the class names into `folder`/classes.txt; return them read back (a later shape covers an earlier one)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    splits = {}
    image_id = 0
    for split, count in (("train", n_train), ("test", n_test)):
        for part in ("images", "masks"):
            (folder / split / part).mkdir(parents=True, exist_ok=True)
        items = []
        for i in range(count):
            image_id += 1
            name = f"{i:04d}.png"
            image, mask, instances, labels = _draw(size, int(rng.integers(1, max_objects + 1)), rng)
            Image.fromarray(image).save(folder / split / "images" / name)
            Image.fromarray(mask, mode="L").save(folder / split / "masks" / name)
            items.append(Masked(folder / split / "images" / name, mask, instances, labels, image_id))
        splits[split] = items
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return SegmentationSet("shape-masks", list(CLASSES), splits["train"], splits["test"])


def _draw(size: int, objects: int, rng: np.random.Generator):
    image = Image.fromarray(rng.integers(0, 60, (size, size, 3), dtype=np.uint8))
    mask = Image.new("L", (size, size), 0)
    draw, draw_mask = ImageDraw.Draw(image), ImageDraw.Draw(mask)
    instances, labels = [], []
    for _ in range(objects):
        side = int(rng.integers(size // 5, size // 2.5))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        kind = int(rng.integers(1, len(CLASSES)))
        colour = tuple(int(c) for c in rng.integers(120, 256, 3))
        alone = Image.new("L", (size, size), 0)
        for canvas, fill in ((draw, colour), (draw_mask, kind), (ImageDraw.Draw(alone), 1)):
            _shape(canvas, CLASSES[kind], x, y, side, fill)
        instances.append(np.array(alone, dtype=bool))
        labels.append(kind)
    stack = np.stack(instances)
    for k in range(len(stack) - 1):  # what a later shape covers is no longer the earlier one's
        stack[k] &= ~stack[k + 1:].any(axis=0)
    seen = stack.any(axis=(1, 2))  # a shape covered whole is no object
    return np.array(image), np.array(mask), stack[seen], np.array(labels, dtype=np.int64)[seen]


def _shape(draw: ImageDraw.ImageDraw, kind: str, x: int, y: int, side: int, fill) -> None:
    corners = [x, y, x + side - 1, y + side - 1]
    if kind == "square":
        draw.rectangle(corners, fill=fill)
    elif kind == "disc":
        draw.ellipse(corners, fill=fill)
    else:
        draw.polygon([(x, y + side - 1), (x + side - 1, y + side - 1), (x + (side - 1) / 2, y)], fill=fill)
