"""Pictures as PNG bytes for the report and the web app: images enlarged or shrunk to display size, the
confusion matrix, the training curves, and data URIs to embed them."""
from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..layout import CURVES, HISTORY, RELIABILITY
from .plots import confusion_figure, plot_curves, plot_reliability

DISPLAY = 112  # pixels: small images are enlarged (nearest) so a person can see them
DISPLAY_MAX = 1024  # pixels on the long side: larger images are shown (and overlays drawn) shrunk to this


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_of_array(pixels: np.ndarray, size: int | None = None) -> bytes:
    """(H, W) or (H, W, 3) uint8 -> PNG bytes, enlarged with nearest neighbour to at least `size` px."""
    image = Image.fromarray(pixels)
    if size and max(image.size) < size:
        scale = int(np.ceil(size / max(image.size)))
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def hwc(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W) for one channel or (H, W, 3)."""
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def enlarged(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W[, 3]) enlarged by a whole factor (nearest) to about DISPLAY pixels."""
    image = hwc(image)
    scale = int(np.ceil(DISPLAY / max(image.shape[:2]))) if max(image.shape[:2]) < DISPLAY else 1
    return np.kron(image, np.ones((scale, scale) + (() if image.ndim == 2 else (1,)), np.uint8))


def displayed(image: Image.Image | np.ndarray, channels: int | None = None) -> np.ndarray:
    """An image ('L' or 'RGB', or an (H, W[, 3]) uint8 array) -> (H, W[, 3]) uint8 at most DISPLAY_MAX pixels on
    its long side (shrunk, antialiased; never enlarged); `channels` 1 or 3 converts it as the model sees it."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if channels is not None:
        image = image.convert("L" if channels == 1 else "RGB")
    if max(image.size) > DISPLAY_MAX:
        image = image.copy()
        image.thumbnail((DISPLAY_MAX, DISPLAY_MAX), Image.Resampling.BILINEAR)
    return np.asarray(image)


def png_of_figure(fig) -> bytes:
    """A matplotlib Figure -> PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="PNG", dpi=100)
    return buffer.getvalue()


def confusion_png(metrics: dict, classes: list[str]) -> bytes:
    """The confusion matrix of `metrics` (classification_metrics' dict) as PNG."""
    return png_of_figure(confusion_figure(metrics["confusion_matrix"], classes))


def reliability_png(run_dir: Path, metrics: dict | None) -> bytes | None:
    """The reliability diagram: the run folder's reliability.png, else drawn from metrics['reliability'];
    None when there is neither."""
    path = Path(run_dir) / RELIABILITY
    if path.is_file():
        return path.read_bytes()
    if not metrics or "reliability" not in metrics:
        return None
    buffer = io.BytesIO()
    plot_reliability(metrics["reliability"], metrics["ece"], buffer)  # matplotlib writes PNG into a file object
    return buffer.getvalue()


def curves_png(run_dir: Path) -> bytes | None:
    """A run folder's training curves as PNG: curves.png, else drawn from metrics.csv; None when it has neither."""
    path = Path(run_dir) / CURVES
    if path.is_file():
        return path.read_bytes()
    if (Path(run_dir) / HISTORY).is_file():
        with open(Path(run_dir) / HISTORY) as handle:
            rows = [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                    for row in csv.DictReader(handle)]
        if rows:
            buffer = io.BytesIO()
            plot_curves(rows, buffer)  # matplotlib writes PNG into a file object too
            return buffer.getvalue()
    return None
