"""Segmentation pictures: the class palette, masks coloured and laid over images, and the run folder's PNGs.

The palette is PASCAL VOC's colour map (the one VOC's palette PNG masks carry): background black, then distinct
colours, 255 (ignore) VOC's pale "void". Masks are coloured with NumPy and Pillow alone, so `predict` does not
import matplotlib; the run's figures are convlab's `new_figure()` (matplotlib's Figure API, no pyplot).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..evaluate.plots import new_figure, plot_curves
from ..layout import CURVES
from .layout import CLASS_IOU, WORST_IMAGES
from .targets import IGNORE

DPI = 110
CELL = 3.0  # inches per image in the worst-images grid
LEGEND_ROW = 0.5  # inches under the grid for the class legend


def _voc_palette() -> np.ndarray:
    """(256, 3) uint8: index i's three lowest bits spread to the top bits of R, G and B, then the next three..."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value = index
        for bit in range(7, -1, -1):
            palette[index] |= np.array([(value >> channel) & 1 for channel in range(3)], np.uint8) << bit
            value >>= 3
    return palette


PALETTE = _voc_palette()


def colour_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) class indices as an (H, W, 3) uint8 RGB picture in the palette's colours."""
    return PALETTE[np.asarray(mask, dtype=np.uint8)]


def palette_image(mask: np.ndarray) -> Image.Image:
    """A class map as a palette ("P") PNG image: the pixel values stay class indices, viewers show the colours."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(PALETTE.ravel().tolist())
    return image


def overlay(image_rgb: np.ndarray, mask: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """`image_rgb` (H, W, 3) uint8 (or (H, W) gray) with every pixel of a class other than background (0) painted
    in its colour at `opacity` (ignore pixels too, in the void colour); background pixels are left as they were."""
    image = np.asarray(image_rgb, dtype=np.uint8)
    image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    mask = np.asarray(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"the mask is {mask.shape[0]}x{mask.shape[1]} but the image is "
                         f"{image.shape[0]}x{image.shape[1]}: give a mask at the image's size")
    out = image.copy()
    painted = mask != 0
    blend = (1 - opacity) * image[painted] + opacity * colour_mask(mask)[painted].astype(np.float64)
    out[painted] = np.round(blend).astype(np.uint8)
    return out


def legend(classes: list[str], present=None) -> Image.Image:
    """An RGB strip of colour swatches with class names, one row per class (those in `present` when given)."""
    indices = [k for k in range(len(classes)) if present is None or k in set(present)]
    font = ImageFont.load_default(size=14)
    row, swatch = 20, 14
    width = row + max((int(font.getlength(classes[k])) for k in indices), default=0) + 8
    image = Image.new("RGB", (width, row * len(indices) + 4), "white")
    draw = ImageDraw.Draw(image)
    for line, k in enumerate(indices):
        top = 2 + line * row
        draw.rectangle((3, top + 3, 3 + swatch, top + 3 + swatch), fill=tuple(PALETTE[k].tolist()), outline="gray")
        draw.text((row + 2, top + 2), classes[k], fill="black", font=font)
    return image


def plot_class_iou(per_class_iou: dict, path: Path) -> None:
    """A bar per class (ConfusionMeter's per_class_iou, in class order) in its colour; the mIoU as a line; a class
    in neither truth nor prediction is marked "absent"."""
    names, values = [str(name) for name in per_class_iou], list(per_class_iou.values())
    defined = [v for v in values if v is not None]
    fig = new_figure((7, max(3.0, 0.3 * len(names) + 1.2)))
    ax = fig.subplots()
    ax.barh(np.arange(len(names)), [v or 0 for v in values], color=PALETTE[:len(names)] / 255, edgecolor="gray")
    for k, value in enumerate(values):
        if value is None:
            ax.text(0.01, k, "absent", va="center", fontsize=8)
        elif value < 0.85:  # beside the bar, else inside its end
            ax.text(value + 0.01, k, f"{value:.3f}", va="center", fontsize=8)
        else:
            ax.text(value - 0.01, k, f"{value:.3f}", va="center", ha="right", fontsize=8, color="white")
    if defined:
        ax.axvline(np.mean(defined), color="tab:red", linestyle="--", label=f"mIoU {np.mean(defined):.3f}")
        ax.legend(loc="lower right")
    ax.set_yticks(np.arange(len(names)), labels=names, fontsize=8 if len(names) > 20 else 10)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="IoU", title="IoU per class (test)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def plot_worst(worst: list[tuple], classes: list[str], path: Path, opacity: float = 0.5) -> None:
    """One row per (image_rgb, truth_mask, pred_mask, title): the image, the truth overlaid, the prediction
    overlaid; a legend of the classes shown under the grid."""
    fig = new_figure((3 * CELL, CELL * len(worst) + LEGEND_ROW))
    axes = fig.subplots(len(worst), 3, squeeze=False)
    shown = set()
    for row, (image, truth, pred, title) in zip(axes, worst):
        shown |= set(np.unique(truth).tolist()) | set(np.unique(pred).tolist())
        panels = [(image, title), (overlay(image, truth, opacity), "truth"),
                  (overlay(image, pred, opacity), "predicted")]
        for ax, (picture, label) in zip(row, panels):
            ax.imshow(picture)
            ax.set_title(label, fontsize=9)
            ax.axis("off")
    _class_legend(fig, classes, shown - {0})
    fig.tight_layout(rect=(0, LEGEND_ROW / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=DPI)


def _class_legend(fig, classes: list[str], shown: set[int]) -> None:
    """Colour patches for the classes (and ignore) that the grid's masks hold, along the bottom of the figure."""
    from matplotlib.patches import Patch

    names = {**dict(enumerate(classes)), IGNORE: "ignore"}
    handles = [Patch(facecolor=PALETTE[k] / 255, edgecolor="gray", label=str(names.get(k, k))) for k in sorted(shown)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)


def write_segmentation_figures(run_dir: Path, history: list[dict], per_class_iou: dict, worst: list[tuple]) -> None:
    """A segmentation run folder's pictures: the training curves (loss, validation mIoU), IoU per class, and the
    worst images (image | truth | prediction); `per_class_iou`'s keys, in class order, name the legend's classes.
    A picture with nothing to show (no history, no images) is not written."""
    if history:
        plot_curves(history, run_dir / CURVES)
    if per_class_iou:
        plot_class_iou(per_class_iou, run_dir / CLASS_IOU)
    if worst:
        plot_worst(worst, list(per_class_iou), run_dir / WORST_IMAGES)
