"""Decoding one image (a file, a PIL image or an array) into a fixed (C, H, W) uint8 array: the one
preprocessing that training, predict, Grad-CAM and the decoded-image cache share."""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ConvlabError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


class UnreadableImage(ConvlabError):
    """An image file that cannot be decoded; `reason` says why, without the path."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}; remove or replace the file")
        self.path, self.reason = path, reason


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (subfolders included), sorted; hidden files are skipped.

    Hidden files are skipped because macOS leaves '._name.jpg' metadata files beside images.
    """
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append(path)
    return sorted(found)


def load_image(source: str | Path | Image.Image | np.ndarray, channels: int,
               size: int | tuple[int, int]) -> np.ndarray:
    """Decode and resize one image to (channels, H, W) uint8: the one preprocessing of train and predict.

    source: a path, a PIL image, or a numpy array (H, W) / (H, W, C) that is uint8 or float in [0, 1].
    channels: 1 (grayscale) or 3 (RGB). size: an int for a square, or (H, W).
    Any PIL mode is accepted: alpha is composited over white, 16-bit values are scaled to 8 bits,
    float ('F') images are read as [0, 1]. Resizing squashes (no crop), bilinear with antialiasing.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    height, width = (size, size) if isinstance(size, int) else size
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _image_from_array(source)
    else:
        image = _open_image(Path(source))

    image = _to_l_or_rgb(image)
    if channels == 1 and image.mode == "RGB":
        image = image.convert("L")
    elif channels == 3 and image.mode == "L":
        image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        return pixels[None].copy()  # (H, W) -> (1, H, W)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)


def _open_image(path: Path) -> Image.Image:
    """Fully decode a file (EXIF rotation applied), or raise UnreadableImage naming it."""
    with _unreadable_as(path), Image.open(path) as opened:
        _check_pixels(path, opened)
        image = ImageOps.exif_transpose(opened)
        image.load()
        return image


@contextmanager
def _unreadable_as(path: Path):
    """Whatever Pillow raises on a bad file becomes UnreadableImage naming it, with the reason."""
    try:
        yield
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage(path, "not an image format Pillow knows") from None
    except Image.DecompressionBombError as err:
        raise UnreadableImage(path, f"decompression bomb ({err})") from None
    except OSError as err:
        raise UnreadableImage(path, str(err.strerror or err)) from err
    except Exception as err:  # noqa: BLE001 - decoders and header parsers raise SyntaxError, ValueError, ...
        raise UnreadableImage(path, f"{type(err).__name__}: {err}") from err


def _check_pixels(path: Path, image: Image.Image) -> None:
    """Refuse images larger than Pillow's decompression-bomb limit before decoding them."""
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit and width * height > limit:
        raise UnreadableImage(path, f"decompression bomb: {width} x {height} = {width * height:,} pixels, over "
                                    f"Pillow's limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS)")


def _image_from_array(array: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, 1|2|3|4) uint8, bool or float in [0, 1] -> a PIL image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (2, 3, 4))):
        raise ConvlabError(f"image array must be (H, W) or (H, W, C) with C in 1..4, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f":
        array = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ConvlabError(f"image array must be uint8 or float in [0, 1], got {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))


def _to_l_or_rgb(image: Image.Image) -> Image.Image:
    """Any mode -> 'L' or 'RGB': alpha over white, 16-bit and float scaled to 0..255."""
    mode = image.mode
    has_alpha = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
    if mode in ("L", "RGB") and not has_alpha:
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I"):
        # I;16 and I hold 16-bit samples (0..65535); PIL's own convert would clip at 255.
        values = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    if mode == "F":
        values = np.asarray(image, dtype=np.float64) * 255.0
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
    if has_alpha:
        return _over_white(image, "LA" if mode in ("LA", "La") else "RGBA")
    try:
        return image.convert("RGB")  # P, CMYK, YCbCr, HSV, ...
    except ValueError as err:
        raise ConvlabError(f"cannot convert image mode {mode} to RGB ({err}); save the image as RGB") from err


def _over_white(image: Image.Image, base: str) -> Image.Image:
    """Composite an image with alpha over a white background; base is 'LA' or 'RGBA'."""
    pixels = np.asarray(image.convert(base), dtype=np.float32)  # (H, W, 2) or (H, W, 4)
    colour, alpha = pixels[..., :-1], pixels[..., -1:] / 255.0
    blended = np.round(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if base == "LA":
        blended = blended[..., 0]  # (H, W, 1) -> (H, W)
    return Image.fromarray(blended)


def peek_mode(path: Path) -> str:
    """The image's mode from its header, without decoding the pixels (too large ones are refused)."""
    with _unreadable_as(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # _check_pixels says it better
        with Image.open(path) as image:
            _check_pixels(path, image)
            return image.mode
