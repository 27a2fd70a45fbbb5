"""The side-by-side picture of one image and each method's map, one colour scale per method."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...evaluate.plots import new_figure
from ..gradcam import overlay


def method_scales(maps: dict[str, np.ndarray], signed: dict[str, bool]) -> dict[str, tuple[float, float]]:
    """(vmin, vmax) per method over all its maps (N, H, W), so one method's maps compare across images.

    Signed maps get a symmetric scale around 0; the 99th percentile of |value| keeps one hot pixel from
    washing out the rest.
    """
    scales = {}
    for name, values in maps.items():
        top = float(np.percentile(np.abs(values), 99)) or float(np.abs(values).max()) or 1.0
        scales[name] = (-top, top) if signed[name] else (0.0, top)
    return scales


def overlay_map(original: np.ndarray, heat: np.ndarray, scale: tuple[float, float], signed: bool) -> np.ndarray:
    """One map (h, w) drawn over `original` (H, W[, 3]) uint8 at the image's size, with the figures' colours
    and `scale` (method_scales): jet from 0 to vmax, or for signed maps bwr symmetric around 0 (red: for)."""
    low, high = scale
    if signed:
        return overlay(original, (heat / high + 1) / 2, cmap="bwr")
    return overlay(original, heat / high, cmap="jet")


def draw_row(axes, original: np.ndarray, maps: dict[str, np.ndarray], scales, signed, titles: bool = True):
    """Draw the image and each method's (H, W) map into `axes` (one row of matplotlib axes)."""
    gray = original.ndim == 2
    axes[0].imshow(original, cmap="gray" if gray else None, interpolation="nearest")
    if titles:
        axes[0].set_title("image", fontsize=9)
    for ax, (name, heat) in zip(axes[1:], maps.items()):
        low, high = scales[name]
        ax.imshow(heat, cmap="bwr" if signed[name] else "jet", vmin=low, vmax=high, interpolation="nearest")
        if titles:
            ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")


def save_figure(original: np.ndarray, maps: dict[str, np.ndarray], scales, signed, title: str, path: Path) -> None:
    """original: (H, W[, 3]) uint8; maps: method -> (H, W). Red: evidence for the class (blue: against)."""
    fig = new_figure((1.9 * (len(maps) + 1), 2.3))
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)
    draw_row(axes[0], original, maps, scales, signed)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def grid_figure(originals: list[np.ndarray], maps: dict[str, np.ndarray], scales, signed, captions: list[str]):
    """One row per image (maps: method -> (N, H, W)); returns the matplotlib figure (the report embeds it)."""
    width = 1.5 * (len(maps) + 1) + 1.4  # inches: a column per map and 1.4 for the captions
    fig = new_figure((width, 1.6 * len(originals)))
    axes = fig.subplots(len(originals), len(maps) + 1, squeeze=False)
    for i, original in enumerate(originals):
        draw_row(axes[i], original, {name: values[i] for name, values in maps.items()}, scales, signed,
                 titles=i == 0)
        axes[i, 0].text(-0.1, 0.5, captions[i], transform=axes[i, 0].transAxes, ha="right", va="center",
                        fontsize=8)
    fig.subplots_adjust(left=1.4 / width, right=0.99, top=0.95, bottom=0.01, wspace=0.05, hspace=0.08)
    return fig
