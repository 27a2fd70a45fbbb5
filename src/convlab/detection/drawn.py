"""Images with their boxes drawn: what `predict --save` writes, and ground truth beside predictions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .figures import draw_boxes
from .run import read_rgb
from .targets import Annotated


def save_drawn(results: list[dict], classes: list[str], folder: Path) -> list[Path]:
    """Write each image of predict's `results` (read again from its path) with its boxes drawn, as FOLDER/NAME.png
    (NAME-2.png, ... when two images share a name); returns the files in order."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for result in results:
        boxes = result["boxes"]
        drawn = draw_boxes(Image.fromarray(read_rgb(result["path"])), [b["box"] for b in boxes],
                           [classes.index(b["label"]) for b in boxes], [b["score"] for b in boxes], classes)
        stem, n = Path(result["path"]).stem, 1
        out = folder / f"{stem}.png"
        while out in written:
            n += 1
            out = folder / f"{stem}-{n}.png"
        drawn.save(out)
        written.append(out)
    return written


SHOWN_SIDE = 256  # smaller images are enlarged to this longer side before drawing, so the tags stay readable


def truth_and_found(item: Annotated, found: dict, classes: list[str], conf: float) -> tuple[Image.Image, Image.Image]:
    """One image twice, enlarged to SHOWN_SIDE when smaller: its ground-truth boxes, and the detector's boxes
    scoring at least `conf` (`found`: detect_images' arrays for this image)."""
    image = Image.fromarray(read_rgb(item.path))
    scale = max(1.0, SHOWN_SIDE / max(image.size))
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST)
    keep = np.asarray(found["scores"]) >= conf
    return (draw_boxes(image, item.boxes * scale, item.labels, None, classes),
            draw_boxes(image, found["boxes"][keep] * scale, found["labels"][keep], found["scores"][keep], classes))
