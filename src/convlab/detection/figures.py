"""Detection pictures: PR curves, the confusion matrix at one IoU, box sizes and classes, boxes drawn on images.

Figures are convlab's `new_figure()` (matplotlib's Figure API, no pyplot); boxes on an image are drawn with
Pillow alone, so `predict --save` does not import matplotlib. A class has one colour everywhere.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFont

from ..evaluate.plots import confusion_figure, new_figure, plot_curves
from ..layout import BOXES, CONFUSION, CURVES, PR_CURVES
from .targets import Annotated

# COCO's object sizes: area below 32^2 is small, below 96^2 medium, else large (COCOeval's areaRng)
SMALL, MEDIUM = 32, 96
_LEGEND_MAX = 20  # more classes than this: their curves are drawn, their legend entries are not


def class_colour(index: int) -> tuple[int, int, int]:
    """A distinct RGB colour for class `index`: hues a golden angle apart, so neighbours never look alike."""
    return ImageColor.getrgb(f"hsv({(index * 137.508) % 360:.1f}, 85%, 90%)")


def plot_pr_curves(curves: dict, path: Path) -> None:
    """Precision against recall at IoU 0.5 (pr_curves' dict): a line per class and their mean, AP50 in the legend."""
    recall = np.asarray(curves["recall"])
    defined = [(k, name, np.asarray(p)) for k, (name, p) in enumerate(curves["precision"].items()) if p is not None]
    fig = new_figure((7, 5.5))
    ax = fig.subplots()
    for k, name, precision in defined:
        few = len(defined) <= _LEGEND_MAX
        ax.plot(recall, precision, linewidth=1, alpha=1 if few else 0.4, color=np.array(class_colour(k)) / 255,
                label=f"{name} {curves['ap50'][name]:.3f}" if few else None)
    if defined:
        mean = np.mean([precision for _, _, precision in defined], axis=0)
        ax.plot(recall, mean, linewidth=3, color="black", label=f"all classes {mean.mean():.3f}")
        ax.legend(title="AP50", fontsize=8, loc="lower left")
    else:
        ax.text(0.5, 0.5, "no ground truth boxes", ha="center", va="center")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title="precision-recall at IoU 0.5 (test)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_detection_confusion(matrix: np.ndarray, classes: list[str], path: Path, iou: float = 0.5) -> None:
    """confusion_at_iou's matrix, drawn as the classification one with a "background" row and column."""
    fig = confusion_figure(np.asarray(matrix), [*classes, "background"], title=f"confusion at IoU {iou} (test)")
    fig.savefig(path, dpi=110)


def plot_box_stats(items: list[Annotated], classes: list[str], path: Path) -> None:
    """Box sizes (sqrt of area, COCO's small/medium/large marked), widths against heights, and boxes per class."""
    boxes = np.concatenate([item.boxes for item in items]) if items else np.zeros((0, 4), np.float32)
    labels = np.concatenate([item.labels for item in items]) if items else np.zeros(0, np.int64)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    fig = new_figure((14, max(4.0, 0.16 * len(classes) + 1.5)))
    sizes, shapes, counts = fig.subplots(1, 3)
    sizes.hist(np.sqrt(widths * heights), bins=40, color="tab:blue")
    for edge in (SMALL, MEDIUM):
        sizes.axvline(edge, color="black", linestyle="--", linewidth=1)
    sizes.text(0.99, 0.97, f"COCO size limits: {SMALL} and {MEDIUM} px", transform=sizes.transAxes, ha="right",
               va="top", fontsize=8)
    sizes.set(title=f"box size ({len(boxes)} boxes)", xlabel="sqrt(area) in pixels", ylabel="boxes")
    shapes.scatter(widths, heights, s=4, alpha=0.4, c=[np.array(class_colour(k)) / 255 for k in labels])
    shapes.set(title="box width and height", xlabel="width (px)", ylabel="height (px)")
    per_class = np.bincount(labels, minlength=len(classes))
    counts.barh(np.arange(len(classes)), per_class, color=[np.array(class_colour(k)) / 255
                                                           for k in range(len(classes))])
    counts.set_yticks(np.arange(len(classes)), labels=classes, fontsize=8 if len(classes) > 20 else 10)
    counts.invert_yaxis()
    counts.set(title="boxes per class", xlabel="boxes")
    for ax in (sizes, shapes, counts):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw_boxes(image: Image.Image, boxes, labels, scores, classes: list[str]) -> Image.Image:
    """A copy of `image` with each box (xyxy pixels) outlined in its class's colour and tagged "class score".

    scores may be None (ground truth): the tag is the class alone.
    """
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    side = min(out.size)
    width = max(1, round(side / 200))
    font = ImageFont.load_default(size=max(10, side // 40))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    for i, (box, label) in enumerate(zip(boxes.tolist(), labels.tolist())):
        colour = class_colour(label)
        draw.rectangle(box, outline=colour, width=width)
        tag = classes[label] if scores is None else f"{classes[label]} {float(scores[i]):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), tag, font=font)
        tag_w, tag_h = right - left + 2 * width, bottom - top + 2 * width
        x = min(max(box[0], 0), out.width - tag_w)  # on the image even when the box leaves it
        y = box[1] - tag_h if box[1] - tag_h >= 0 else max(box[1], 0)  # above the box, else inside its top
        draw.rectangle((x, y, x + tag_w, y + tag_h), fill=colour)
        ink = "black" if sum(c * w for c, w in zip(colour, (0.299, 0.587, 0.114))) > 140 else "white"
        draw.text((x + width - left, y + width - top), tag, fill=ink, font=font)
    return out


def write_detection_figures(run, history: list[dict]) -> None:
    """A detection run folder's pictures: training curves, PR curves and the confusion matrix at IoU 0.5 on the
    test split (the predictions its evaluation kept), and the training boxes' sizes and classes."""
    from .metrics import confusion_at_iou, pr_curves  # lazy: start-up time (the COCO evaluator, the detect extra)

    if history:
        plot_curves(history, run.path / CURVES)
    if run.evaluated is not None:
        items, found = run.evaluated
        plot_pr_curves(pr_curves(items, found, run.classes), run.path / PR_CURVES)
        plot_detection_confusion(confusion_at_iou(items, found, run.classes), run.classes, run.path / CONFUSION)
    if run.training_items:
        plot_box_stats(run.training_items, run.classes, run.path / BOXES)
