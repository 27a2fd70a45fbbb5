"""What `predict` gives for a segmentation run outside Python: its masks as COCO RLE in JSON, and the files of
`--save` (the class map as a palette PNG, the image with the mask laid over it and a legend)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .figures import legend, overlay, palette_image
from .images import read_image
from .run_data import as_channels


def rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO's compressed RLE {"size": [H, W], "counts": str} (faster-coco-eval's encoder, the one
    pycocotools' `mask.decode` reads back)."""
    from faster_coco_eval.core import mask as coco_mask  # lazy: start-up time

    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(n) for n in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def as_json(results: list[dict], classes: list[str]) -> list[dict]:
    """predict's results with each class map as one RLE per class present, in class order: [{"path", "width",
    "height", "pixels", "masks": [{"class", "rle"}]}]."""
    return [{"path": result["path"], "width": result["width"], "height": result["height"],
             "pixels": result["pixels"],
             "masks": [{"class": name, "rle": rle(result["mask"] == k)} for k, name in enumerate(classes)
                       if name in result["pixels"]]} for result in results]


def overlay_with_legend(image_rgb: np.ndarray, mask: np.ndarray, classes: list[str]) -> Image.Image:
    """The image with the mask laid over it (figures.overlay) and, on its right, the legend of the classes present."""
    painted = Image.fromarray(overlay(image_rgb, mask))
    key = legend(classes, present=np.unique(mask).tolist())
    canvas = Image.new("RGB", (painted.width + key.width, max(painted.height, key.height)), "white")
    canvas.paste(painted, (0, 0))
    canvas.paste(key, (painted.width, 0))
    return canvas


def save_masks(results: list[dict], classes: list[str], folder: Path) -> list[Path]:
    """For each image of predict's `results` (read again from its path): FOLDER/NAME_mask.png, the class map as a
    palette PNG (pixel values = class indices), and FOLDER/NAME_overlay.png; NAME-2_... when two images share a
    name. Returns the mask files in order."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for result in results:
        stem, n = Path(result["path"]).stem, 1
        name = stem
        while folder / f"{name}_mask.png" in written:
            n += 1
            name = f"{stem}-{n}"
        rgb = (as_channels(*read_image(result["path"]), 3) * 255).round().astype(np.uint8)
        palette_image(result["mask"]).save(folder / f"{name}_mask.png")
        overlay_with_legend(rgb, result["mask"], classes).save(folder / f"{name}_overlay.png")
        written.append(folder / f"{name}_mask.png")
    return written
