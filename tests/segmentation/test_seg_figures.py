"""Segmentation pictures: the palette, overlays (class colour where the mask is a class, the image where it is
background), and the run folder's PNGs at their sizes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlab.layout import CURVES
from convlab.segmentation.figures import (CELL, DPI, LEGEND_ROW, PALETTE, colour_mask, legend, overlay, palette_image,
                                          write_segmentation_figures)
from convlab.segmentation.layout import CLASS_IOU, WORST_IMAGES
from convlab.segmentation.targets import IGNORE

CLASSES = ["background", "square", "disc", "triangle"]
HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_miou": 0.3 * e, "lr": 0.01}
           for e in (1, 2, 3)]
PER_CLASS = {"background": 0.95, "square": 0.7, "disc": 0.41, "triangle": None}


def png(path: Path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG"
    return image


def sample(seed: int, size=(40, 56)):
    image = np.full((*size, 3), 200, np.uint8)  # plain gray: an overlay colour cannot appear by chance
    image[:, : 4 * seed] = 60
    truth = np.zeros(size, np.uint8)
    truth[5:20, 10:30], truth[25:35, 30:50] = 1, 2
    pred = np.roll(truth, 3, axis=1)
    return image, truth, pred, f"img{seed}.png  IoU 0.{seed}"


def test_the_palette_is_vocs_with_black_background_distinct_colours_and_a_pale_ignore():
    assert PALETTE[0].tolist() == [0, 0, 0] and PALETTE[IGNORE].tolist() == [224, 224, 192]
    assert PALETTE[1:4].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert len({tuple(c) for c in PALETTE.tolist()}) == 256
    mask = np.array([[0, 1], [2, IGNORE]], np.uint8)
    assert colour_mask(mask).tolist() == [[[0, 0, 0], [128, 0, 0]], [[0, 128, 0], [224, 224, 192]]]
    as_png = palette_image(mask)
    assert as_png.mode == "P" and np.asarray(as_png).tolist() == mask.tolist()
    assert np.asarray(as_png.convert("RGB")).tolist() == colour_mask(mask).tolist()


def test_overlay_paints_classes_and_leaves_background_alone():
    image = np.full((6, 8, 3), 200, np.uint8)
    image[:, :, 2] = 10
    mask = np.zeros((6, 8), np.uint8)
    mask[1:3, 2:5], mask[4, 0], mask[5, 7] = 1, 2, IGNORE
    out = overlay(image, mask, opacity=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out[1, 2].tolist() == [164, 100, 5]  # round((200 + 128) / 2), (200 + 0) / 2, (10 + 0) / 2
    assert out[4, 0].tolist() == [100, 164, 5]
    assert out[5, 7].tolist() == [212, 212, 101]  # ignore in the void colour
    assert (out[mask == 0] == image[mask == 0]).all()
    assert (overlay(image, mask, opacity=1.0)[mask == 1] == PALETTE[1]).all()
    assert overlay(image[:, :, 0], mask).shape == (6, 8, 3)  # a gray image is overlaid as RGB
    with pytest.raises(ValueError, match="the mask is 6x8 but the image is 5x8"):
        overlay(image[:5], mask)


def test_legend_has_a_swatch_in_each_class_colour():
    strip = np.asarray(legend(CLASSES, present=[1, 3]))
    assert strip.shape[0] == 2 * 20 + 4  # one row per class shown
    assert (strip[2 + 10, 10] == PALETTE[1]).all() and (strip[22 + 10, 10] == PALETTE[3]).all()
    assert np.asarray(legend(CLASSES)).shape[0] == 4 * 20 + 4


def test_run_figures_are_written_at_their_sizes(tmp_path):
    worst = [sample(1), sample(2), sample(3)]
    write_segmentation_figures(tmp_path, HISTORY, PER_CLASS, worst)
    assert png(tmp_path / CURVES).size == (1430, 418)  # 13 x 3.8 in at 110 dpi: loss, mIoU, learning rate
    assert png(tmp_path / CLASS_IOU).size == (770, round(3.0 * 110))  # 7 x max(3, 0.3 * 4 + 1.2) in
    grid = png(tmp_path / WORST_IMAGES)
    assert grid.size == (round(3 * CELL * DPI), round((3 * CELL + LEGEND_ROW) * DPI))
    pixels = np.asarray(grid.convert("RGB")).reshape(-1, 3).astype(int)
    for k in (1, 2):  # both classes' overlay colours appear in the grid (at 0.5 opacity over the gray)
        blended = np.round((200 + PALETTE[k].astype(float)) / 2)
        assert (np.abs(pixels - blended) <= 2).all(axis=1).sum() > 100


def test_nothing_to_show_writes_nothing(tmp_path):
    write_segmentation_figures(tmp_path, [], {}, [])
    assert list(tmp_path.iterdir()) == []
    write_segmentation_figures(tmp_path, [], {0: 0.5, 1: None}, [sample(1)])  # classes known by index only
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CLASS_IOU, WORST_IMAGES])
    assert png(tmp_path / WORST_IMAGES).size == (round(3 * CELL * DPI), round((CELL + LEGEND_ROW) * DPI))
