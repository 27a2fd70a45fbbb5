"""Generated shapes with exact boxes: the small detection data of the tests and of a learner's first run."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import save_image
from .targets import Annotated, DetectionSet

SHAPES = ["square", "disc", "triangle"]


def make_shapes(folder: str | Path, n_train: int = 48, n_test: int = 16, size: int = 64, seed: int = 0,
                max_objects: int = 3, negatives: float = 0.1) -> DetectionSet:
    """Draw n_train + n_test RGB PNGs of size x size into `folder` (train/ and test/), each with 0 to
    `max_objects` coloured shapes on a noisy background, and return them with their boxes.

    A share `negatives` of the images has no object. Boxes are the shapes' tight pixel-corner boxes.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    splits = {}
    image_id = 0
    for split, count in (("train", n_train), ("test", n_test)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        items = []
        for i in range(count):
            image_id += 1
            path = folder / split / f"{i:04d}.png"
            objects = 0 if rng.random() < negatives else int(rng.integers(1, max_objects + 1))
            boxes, labels = _draw(path, size, objects, rng)
            items.append(Annotated(path, size, size, boxes, labels, image_id=image_id))
        splits[split] = items
    return DetectionSet("shapes", list(SHAPES), splits["train"], splits["test"])


def _draw(path: Path, size: int, objects: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    background = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    boxes, labels = [], []
    for _ in range(objects):
        side = int(rng.integers(size // 6, size // 2.5))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        kind = int(rng.integers(len(SHAPES)))
        colour = tuple(int(c) for c in rng.integers(120, 256, 3))
        corners = [x, y, x + side - 1, y + side - 1]  # PIL's drawing boxes include their last pixel
        if SHAPES[kind] == "square":
            draw.rectangle(corners, fill=colour)
        elif SHAPES[kind] == "disc":
            draw.ellipse(corners, fill=colour)
        else:
            draw.polygon([(x, y + side - 1), (x + side - 1, y + side - 1), (x + (side - 1) / 2, y)], fill=colour)
        boxes.append([x, y, x + side, y + side])
        labels.append(kind)
    save_image(image, path)
    return np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64)
