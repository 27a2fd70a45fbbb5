"""Decoding one image (a file, encoded bytes, a PIL image or an array) into a fixed (C, H, W) uint8 array: the
one decoder that training, predict, Grad-CAM, attribution and every server route share.

Large images are decoded straight to a bounded working size (JPEG's DCT scaling, then an integer box
reduction) before any conversion, so the memory and time an image costs follow the size it is used at, not
the size its header declares. The working size stays at least WORKING_MARGIN times the target, so the final
antialiased resize sees nearly the same pixels, and images up to that size decode exactly as without it.
"""
from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import ConvlabError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
WORKING_MARGIN = 4  # an early reduction keeps at least this many times the target size
ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class UnreadableImage(ConvlabError):
    """An image that cannot be decoded; `reason` says why, without the path."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}; remove or replace the file")
        self.path, self.reason = path, reason


class UnknownFormat(UnreadableImage):
    """Not an image, or not in one of the formats allowed."""


class TooManyPixels(UnreadableImage):
    """The header declares width x height over the cap `limit` (refused before decoding)."""

    def __init__(self, path: str | Path, reason: str, size: tuple[int, int] = (0, 0), limit: int = 0):
        super().__init__(path, reason)
        self.size, self.limit = size, limit


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


def load_image(source: str | Path | bytes | Image.Image | np.ndarray, channels: int, size: int | tuple[int, int],
               max_pixels: int | None = None, formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Decode and resize one image to (channels, H, W) uint8: the one preprocessing of train and predict.

    source: a path, encoded bytes, a PIL image, or a numpy array (H, W) / (H, W, C) that is uint8 or float in
    [0, 1]. channels: 1 (grayscale) or 3 (RGB). size: an int for a square, or (H, W).
    max_pixels, formats: what open_image refuses (files and bytes only).
    Any PIL mode is accepted: alpha is composited over white, 16-bit values are scaled to 8 bits,
    float ('F') images are read as [0, 1]. Resizing squashes (no crop), bilinear with antialiasing.
    """
    height, width = (size, size) if isinstance(size, int) else size
    if isinstance(source, np.ndarray):
        return fit(_image_from_array(source), channels, (height, width))
    if isinstance(source, Image.Image):
        return fit(decode(source, working_size((height, width))), channels, (height, width))
    with open_image(source, max_pixels, formats) as opened:
        return fit(decode(opened, working_size((height, width))), channels, (height, width))


def working_size(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of a model input -> the smallest (width, height) an early reduction may leave."""
    height, width = size
    return width * WORKING_MARGIN, height * WORKING_MARGIN


def open_image(source: str | Path | bytes, max_pixels: int | None = None,
               formats: tuple[str, ...] | None = None) -> Image.Image:
    """Open a file or encoded bytes and read its header only: the format must be one of `formats` (any Pillow
    reads when None) and the declared width x height at most `max_pixels` (Pillow's decompression-bomb limit
    when None); UnknownFormat, TooManyPixels or UnreadableImage otherwise."""
    name = "(upload)" if isinstance(source, bytes) else Path(source)
    if isinstance(source, bytes) and not source:
        raise UnreadableImage(name, "empty image: no bytes")
    with _unreadable_as(name), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below says it better
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=formats)
    cap = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    width, height = image.size
    if cap and width * height > cap:
        image.close()
        reason = (f"{width} x {height} = {width * height:,} pixels is over the cap of {cap:,} pixels (refused "
                  f"before decoding)" if max_pixels else f"decompression bomb: {width} x {height} = "
                  f"{width * height:,} pixels, over Pillow's limit of {cap:,} (PIL.Image.MAX_IMAGE_PIXELS)")
        raise TooManyPixels(name, reason, (width, height), cap)
    return image


def declared_pixels(image: Image.Image) -> int:
    """Width x height as the header declares them (nothing decoded)."""
    return image.size[0] * image.size[1]


def decode(image: Image.Image, at_least: tuple[int, int] | None = None) -> Image.Image:
    """An opened (or decoded) image -> 'L' or 'RGB', EXIF rotation applied, reduced early to no less than
    `at_least` (width, height) after rotation, alpha composited over white after that reduction."""
    name = getattr(image, "filename", "") or "(upload)"
    with _unreadable_as(name):
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if at_least is not None and orientation in ROTATED:
            at_least = at_least[::-1]  # the file holds the image before its rotation
        if at_least is not None and image.format == "JPEG":
            image.draft(image.mode, at_least)  # the DCT decodes at 1/2, 1/4 or 1/8 scale when that stays >= at_least
        image.load()
        if at_least is not None:
            image = _reduced(_reducible(image), at_least)
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        return _to_l_or_rgb(image)


def _reducible(image: Image.Image) -> Image.Image:
    """Modes a box filter cannot average (palette indices, packed bits, 16-bit) -> the same pixels in one it can,
    converted by Pillow in uint8 (alpha is kept, to be composited after the reduction)."""
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    if image.mode == "1":
        return image.convert("L")
    if image.mode.startswith("I;16"):
        return image.convert("I")
    return image


def _reduced(image: Image.Image, at_least: tuple[int, int]) -> Image.Image:
    """The image shrunk by the largest whole factor (box average) that keeps it >= at_least on both sides."""
    factor = min(image.width // max(1, at_least[0]), image.height // max(1, at_least[1]))
    return image.reduce(factor) if factor >= 2 else image


def fit(image: Image.Image, channels: int, size: int | tuple[int, int]) -> np.ndarray:
    """A decoded image -> (channels, H, W) uint8 of size (H, W) (an int: a square): squashed, bilinear with
    antialiasing."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    height, width = (size, size) if isinstance(size, int) else size
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


@contextmanager
def _unreadable_as(path):
    """Whatever Pillow raises on a bad file becomes UnreadableImage naming it, with the reason."""
    try:
        yield
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnknownFormat(path, "not an image format Pillow knows") from None
    except Image.DecompressionBombError as err:
        raise TooManyPixels(path, f"decompression bomb ({err})") from None
    except OSError as err:
        raise UnreadableImage(path, str(err.strerror or err)) from err
    except Exception as err:  # noqa: BLE001 - decoders and header parsers raise SyntaxError, ValueError, ...
        raise UnreadableImage(path, f"{type(err).__name__}: {err}") from err


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
    with open_image(path) as image:
        return image.mode
