"""A segmentation run's report sections: mIoU, Dice and pixel accuracy with IoU and Dice per class, the IoU-per-class
and training-curve figures, the test images of lowest mIoU (image | truth | prediction overlays), then the config
and the data."""
from __future__ import annotations

import html
import io

import numpy as np

from ..errors import ConvlabError
from ..evaluate.pictures import png_of_array
from ..segmentation.figures import legend, overlay, plot_class_iou
from ..segmentation.layout import CLASS_IOU
from ..segmentation.run import SegmentationRun
from ..segmentation.targets import pixel_counts
from .page import config_section, curves_section, html_table, img

WORST_SHOWN = 6  # test images of lowest mIoU
SHOWN_SIDE = 192  # smaller images are enlarged (nearest) to at least this longer side


def segmentation_parts(run: SegmentationRun, methods=None) -> list[str]:
    """Results first (metrics, IoU per class, curves, worst images), then the config and the data."""
    try:
        metrics = run.evaluate()
    except ConvlabError as err:
        missing = (f"<h2>Dataset</h2><p class=note>the dataset could not be loaded here ({html.escape(str(err))}),"
                   f" so the report has only the metrics and figures saved with the run.</p>")
        saved = [_metrics_section(run.metrics), _class_iou_section(run, run.metrics)] if run.metrics else []
        return saved + [curves_section(run), config_section(run), missing]
    items, _ = run.evaluated
    return [_metrics_section(metrics), _class_iou_section(run, metrics), curves_section(run),
            _worst_images_section(run), config_section(run), _dataset_section(run, items)]


def _value(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _metrics_section(metrics: dict) -> str:
    head = (f"<p>test mIoU <b>{_value(metrics['miou'])}</b>, Dice {_value(metrics['dice'])}, pixel accuracy "
            f"{_value(metrics['pixel_accuracy'])} on {metrics['num_images']} images (each scored at its own size; "
            f"'-': a class in neither the truth nor the prediction)</p>")
    ious, dice = metrics["per_class_iou"], metrics["per_class_dice"]
    worst = min((iou for iou in ious.values() if iou is not None), default=None)
    rows = "".join(f"<tr{' class=low' if iou is not None and iou == worst else ''}><td>{html.escape(name)}</td>"
                   f"<td class=num>{_value(iou, 3)}</td><td class=num>{_value(dice.get(name), 3)}</td></tr>"
                   for name, iou in ious.items())
    return (f"<h2>Test metrics</h2>{head}<h2>Per class</h2><table><tr><th>class</th><th>IoU</th><th>Dice</th></tr>"
            f"{rows}</table><p class=note>shaded: the class with the lowest IoU</p>")


def _class_iou_section(run: SegmentationRun, metrics: dict) -> str:
    """The run folder's IoU-per-class figure; drawn from `metrics` when the folder has none."""
    path = run.path / CLASS_IOU
    if path.is_file():
        png = path.read_bytes()
    else:
        buffer = io.BytesIO()
        plot_class_iou(metrics["per_class_iou"], buffer)
        png = buffer.getvalue()
    return f"<h2>IoU per class</h2>{img(png, 'IoU per class')}"


def _worst_images_section(run: SegmentationRun) -> str:
    worst = run.worst_images(WORST_SHOWN)
    title = "<h2>Test images of lowest mIoU</h2>"
    if not worst:
        return f"{title}<p>none: the test split has no images.</p>"
    figures, shown = [], set()
    for image, truth, predicted, caption in worst:
        shown |= set(np.unique(truth).tolist()) | set(np.unique(predicted).tolist())
        name = html.escape(caption.split(":")[0])
        panels = [(image, name), (overlay(image, truth), f"truth of {name}"),
                  (overlay(image, predicted), f"prediction on {name}")]
        figures.append("<figure>" + " ".join(img(png_of_array(picture, SHOWN_SIDE), alt, pixel=True)
                                             for picture, alt in panels)
                       + f"<figcaption>{html.escape(caption)} (left to right: image, truth, prediction)"
                         f"</figcaption></figure>")
    key = img(png_of_array(np.asarray(legend(run.classes, present=sorted(shown)))), "class colours")
    return (f"{title}<p>the {len(worst)} test images whose own mIoU is lowest, each with the true mask and the "
            f"predicted one laid over it:</p><div class=mistakes>{''.join(figures)}</div>{key}")


def _dataset_section(run: SegmentationRun, items) -> str:
    counts = pixel_counts(items, run.classes)
    total = max(sum(counts.values()), 1)
    rows = [[name, f"{count:,}", f"{100 * count / total:.1f}%"] for name, count in counts.items()]
    return (f"<h2>Dataset</h2><p>{html.escape(run.config.data.name)}: {len(items)} test images, "
            f"{len(run.classes)} classes.</p>{html_table(['class', 'test pixels', 'share'], rows)}")
