"""Generated shapes with exact masks: the small segmentation data of the tests and of a learner's first run,
written in the mask-folder layout (`masks:DIR`) so the readers are tested on it too."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import atomic_write_text, save_image
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
            save_image(Image.fromarray(image), folder / split / "images" / name)
            save_image(Image.fromarray(mask, mode="L"), folder / split / "masks" / name)
            items.append(Masked(folder / split / "images" / name, mask, instances, labels, image_id))
        splits[split] = items
    atomic_write_text(folder / "classes.txt", "\n".join(CLASSES) + "\n", durable=False)
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


SCAN_CLASSES = ["background", "lesion"]


def make_scans(folder: str | Path, n_train: int = 32, n_test: int = 8, size: int = 64, seed: int = 0,
               big: int = 0) -> SegmentationSet:
    """Medical-style data: 16-bit grayscale PNGs (a smooth tissue background of about 20,000 with noise) with
    0 to 3 round lesions about 6,000 brighter, and their 0/1 masks, in the mask-folder layout with classes
    background and lesion. `big` > 0 also writes folder/big_scan.png (big x big, its mask big_scan_mask.png):
    a scan larger than the model's input, for tiled prediction."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    splits = {}
    for split, count in (("train", n_train), ("test", n_test)):
        for part in ("images", "masks"):
            (folder / split / part).mkdir(parents=True, exist_ok=True)
        items = []
        for i in range(count):
            name = f"{i:04d}.png"
            image, mask = _scan(size, rng)
            save_image(Image.fromarray(image), folder / split / "images" / name)
            save_image(Image.fromarray(mask, mode="L"), folder / split / "masks" / name)
            items.append(Masked(folder / split / "images" / name, mask))
        splits[split] = items
    atomic_write_text(folder / "classes.txt", "\n".join(SCAN_CLASSES) + "\n", durable=False)
    if big:
        image, mask = _scan(big, rng, lesions=max(3, (big // size) ** 2))
        save_image(Image.fromarray(image), folder / "big_scan.png")
        save_image(Image.fromarray(mask, mode="L"), folder / "big_scan_mask.png")
    return SegmentationSet("scans", list(SCAN_CLASSES), splits["train"], splits["test"])


def _scan(size: int, rng: np.random.Generator, lesions: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    tilt = rng.uniform(-1500, 1500, 2)
    tissue = 20000 + tilt[0] * rows / size + tilt[1] * cols / size + rng.normal(0, 1200, (size, size))
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(0, 4)) if lesions is None else lesions):
        radius = rng.uniform(size / 14, size / 7) if lesions is None else rng.uniform(4.5, 9)
        y, x = rng.uniform(radius, size - radius, 2)
        inside = (rows - y) ** 2 + (cols - x) ** 2 <= radius ** 2
        tissue[inside] += 6000
        mask[inside] = 1
    return np.clip(tissue, 0, 65535).astype(np.uint16), mask
