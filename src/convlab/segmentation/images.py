"""Reading an image for segmentation at its native depth: 8-bit and 16-bit values kept as stored (medical scans are
often 16-bit grayscale PNG or TIFF), with the scale that maps them to [0, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..data.decode import UnreadableImage, open_image

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")  # how Pillow opens 16-bit gray PNG and TIFF


def read_image(path: str | Path) -> tuple[np.ndarray, int]:
    """An image file -> (pixels (H, W, C) uint8 or uint16, scale) with pixels / scale in [0, 1].

    C is 1 for grayscale (8-bit L; 16-bit I;16 from PNG or TIFF, and I holding 0..65535) and 3 for anything else
    (palette, RGBA, CMYK, ... converted to RGB as Pillow does: alpha dropped). scale is 255 or 65535. The EXIF
    orientation is applied, as the detection loader does, so a mask drawn on the image as shown fits it. Pillow
    reads 48-bit RGB as 8-bit RGB. A file that cannot be read, or holds values no 16-bit image holds (float,
    negative or over 65535), raises UnreadableImage naming it.
    """
    with open_image(path) as image:  # refuses non-images and decompression bombs by the header
        try:
            image = ImageOps.exif_transpose(image)
            pixels = _pixels(image)
        except (OSError, ValueError, SyntaxError) as err:
            raise UnreadableImage(path, str(err)) from None
    if pixels is None:
        raise UnreadableImage(path, f"a {image.mode} image with values outside 0..65535; save it as an 8- or "
                                    f"16-bit image")
    return pixels, 65535 if pixels.dtype == np.uint16 else 255


def _pixels(image: Image.Image) -> np.ndarray | None:
    if image.mode in ("1", "L", "LA", "La"):
        return np.asarray(image.convert("L"))[..., None]
    if image.mode in SIXTEEN_BIT:
        return np.asarray(image).astype(np.uint16)[..., None]  # native byte order
    if image.mode == "I":
        values = np.asarray(image)
        inside = values.size == 0 or (values.min() >= 0 and values.max() <= 65535)
        return values.astype(np.uint16)[..., None] if inside else None
    if image.mode == "F":
        return None
    return np.asarray(image.convert("RGB"))
