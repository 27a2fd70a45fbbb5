"""Detection pictures: the run folder's PNGs (PR curves, confusion at IoU 0.5, box sizes) and boxes drawn on images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlab.detection.figures import (class_colour, draw_boxes, plot_box_stats, plot_detection_confusion,
                                       plot_pr_curves)
from convlab.detection.metrics import confusion_at_iou, pr_curves
from convlab.detection.targets import Annotated

CLASSES = ["square", "disc", "triangle"]
TRUTH = [Annotated(Path("a.png"), 120, 120, [[10, 10, 60, 60], [70, 20, 110, 100]], [0, 1]),
         Annotated(Path("b.png"), 120, 120, [[5, 5, 115, 115]], [1]),
         Annotated(Path("empty.png"), 120, 120, np.zeros((0, 4)), [])]
PREDICTIONS = [{"boxes": [[12, 10, 60, 62], [0, 80, 30, 110]], "labels": [0, 2], "scores": [0.9, 0.6]},
               {"boxes": [[5, 5, 110, 115]], "labels": [1], "scores": [0.8]},
               {"boxes": np.zeros((0, 4)), "labels": [], "scores": []}]


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def painted(path: Path) -> bool:
    """More than a blank canvas: some pixels differ from the background."""
    return float(np.asarray(Image.open(path).convert("L")).std()) > 1


def test_pr_curves_png(tmp_path):
    curves = pr_curves(TRUTH, PREDICTIONS, CLASSES)  # triangle has no ground truth: no line, still a figure
    plot_pr_curves(curves, tmp_path / "pr_curves.png")
    assert png_size(tmp_path / "pr_curves.png") == (770, 605)  # 7 x 5.5 in at 110 dpi
    assert painted(tmp_path / "pr_curves.png")


def test_pr_curves_png_without_ground_truth(tmp_path):
    curves = pr_curves([TRUTH[2]], [PREDICTIONS[0]], CLASSES)
    assert all(p is None for p in curves["precision"].values())
    plot_pr_curves(curves, tmp_path / "pr_curves.png")
    assert png_size(tmp_path / "pr_curves.png") == (770, 605)


def test_confusion_png_has_a_background_row(tmp_path):
    matrix = confusion_at_iou(TRUTH, PREDICTIONS, CLASSES)
    plot_detection_confusion(matrix, CLASSES, tmp_path / "confusion_matrix.png")
    assert png_size(tmp_path / "confusion_matrix.png") == (605, 495)  # evaluate/plots.py's grid for 4 names
    assert painted(tmp_path / "confusion_matrix.png")


@pytest.mark.parametrize("items", [TRUTH, []], ids=["boxes", "no images"])
def test_box_stats_png(tmp_path, items):
    plot_box_stats(items, CLASSES, tmp_path / "boxes.png")
    assert png_size(tmp_path / "boxes.png") == (1540, 440)
    assert painted(tmp_path / "boxes.png")


def test_draw_boxes_outlines_in_the_class_colour_and_leaves_the_rest():
    image = Image.new("RGB", (200, 160), "gray")
    drawn = draw_boxes(image, [[40, 50, 120, 140], [130, 10, 190, 60]], [0, 2], [0.91, 0.4], CLASSES)
    pixels, before = np.asarray(drawn), np.asarray(image)
    assert drawn.size == image.size and (before == 128).all()  # a copy: the input is untouched
    assert tuple(pixels[100, 40]) == class_colour(0)  # left edge of the first box
    assert tuple(pixels[140, 80]) == class_colour(0)  # bottom edge
    assert tuple(pixels[35, 190]) == class_colour(2)  # right edge of the second box, another colour
    assert class_colour(0) != class_colour(2)
    assert (pixels[70:130, 50:110] == 128).all()  # inside the box, below its tag: the image as it was
    tag = pixels[38:50, 41:80]  # above the first box: the tag's fill and its text
    assert (tag != 128).any(axis=-1).all() and len(np.unique(tag.reshape(-1, 3), axis=0)) > 1


def test_draw_boxes_ground_truth_tags_and_boxes_leaving_the_image():
    image = Image.new("L", (100, 100), 0)  # grey input, RGB output
    drawn = draw_boxes(image, np.array([[-20, -5, 60, 40]]), np.array([1]), None, CLASSES)
    assert drawn.mode == "RGB"
    pixels = np.asarray(drawn)
    assert tuple(pixels[20, 60]) == class_colour(1)  # the right edge is still drawn
    assert (pixels[:8, :20] != 0).any()  # the tag moved inside the image
