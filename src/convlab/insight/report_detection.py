"""A detection run's report sections: COCO metrics, PR curves and the confusion matrix at IoU 0.5, the test
images with the most missed and false boxes (ground truth beside predictions), then the config and the data."""
from __future__ import annotations

import html
import io

import numpy as np

from ..detection.drawn import truth_and_found
from ..detection.figures import plot_detection_confusion, plot_pr_curves
from ..detection.metrics import coco_metrics, confusion_at_iou, image_errors, pr_curves
from ..detection.run import CONF, DetectionRun, read_rgb
from ..errors import ConvlabError
from ..evaluate.pictures import png_of_array
from .page import config_section, curves_section, html_table, img

IOU = 0.5  # the IoU of the PR curves, the confusion matrix and the missed/false counts (COCO's AP50)
WORST_SHOWN = 6  # test images with the most missed and false boxes
METRIC_ROWS = [("map", "mAP@[.5:.95]"), ("map50", "AP50"), ("map75", "AP75"), ("map_small", "AP small"),
               ("map_medium", "AP medium"), ("map_large", "AP large"), ("mar100", "AR@100")]


def detection_parts(run: DetectionRun, methods=None) -> list[str]:
    """Results first (metrics, PR curves, confusion, worst images, curves), then the config and the data."""
    try:
        items, classes = run.test_items()
    except ConvlabError as err:
        missing = (f"<h2>Dataset</h2><p class=note>the dataset could not be loaded here ({html.escape(str(err))}),"
                   f" so the report has only the metrics saved with the run.</p>")
        return ([_metrics_section(run.metrics)] if run.metrics else []) + [
            curves_section(run), config_section(run), missing]
    if classes != run.classes:
        raise ConvlabError(f"run {run.path}: its test split names the classes {', '.join(classes[:10])}, but the "
                           f"run detects {', '.join(run.classes[:10])}; the data changed since training")
    found = run.detect_images([read_rgb(item.path) for item in items])
    return [_metrics_section(coco_metrics(items, found, run.classes)), _curves_and_confusion(run, items, found),
            _worst_images_section(run, items, found), curves_section(run), config_section(run),
            _dataset_section(run, items)]


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _metrics_section(metrics: dict) -> str:
    head = (f"<p>test mAP@[.5:.95] <b>{_value(metrics['map'])}</b>, AP50 {_value(metrics['map50'])}, AP75 "
            f"{_value(metrics['map75'])} on {metrics['num_images']} images with {metrics['num_boxes']} boxes "
            f"(COCO's evaluation; '-': no boxes of that size)</p>")
    table = html_table(["metric", "value"], [[name, _value(metrics[key])] for key, name in METRIC_ROWS])
    aps = metrics["per_class_ap"]
    worst = min((ap for ap in aps.values() if ap is not None), default=None)
    rows = "".join(f"<tr{' class=low' if ap is not None and ap == worst else ''}><td>{html.escape(name)}</td>"
                   f"<td class=num>{_value(ap)}</td></tr>" for name, ap in aps.items())
    return (f"<h2>Test metrics</h2>{head}{table}<h2>Per class</h2><table><tr><th>class</th><th>AP@[.5:.95]</th>"
            f"</tr>{rows}</table><p class=note>shaded: the class with the lowest AP</p>")


def _figure_png(draw, *args) -> bytes:
    """A figure function that saves to a path, saved into memory instead."""
    buffer = io.BytesIO()
    draw(*args, buffer)
    return buffer.getvalue()


def _curves_and_confusion(run: DetectionRun, items, found) -> str:
    curves = _figure_png(plot_pr_curves, pr_curves(items, found, run.classes))
    matrix = confusion_at_iou(items, found, run.classes, iou=IOU, conf=CONF)
    confusion = _figure_png(plot_detection_confusion, matrix, run.classes)
    return (f"<h2>Precision and recall at IoU {IOU}</h2>{img(curves, 'precision-recall curves')}"
            f"<h2>Confusion matrix at IoU {IOU}</h2><p class=note>boxes scoring at least {CONF}; the background "
            f"row counts false boxes, the background column missed ones</p>{img(confusion, 'confusion matrix')}")


def _worst_images_section(run: DetectionRun, items, found) -> str:
    errors = image_errors(items, found, run.classes, iou=IOU, conf=CONF)
    order = sorted(range(len(items)), key=lambda i: -(errors[i]["missed"] + errors[i]["false"]))
    worst = [i for i in order if errors[i]["missed"] + errors[i]["false"]][:WORST_SHOWN]
    title = "<h2>Images with the most missed and false boxes</h2>"
    if not worst:
        return f"{title}<p>none: every test box is found and no box is false (IoU {IOU}, score {CONF}).</p>"
    figures = []
    for i in worst:
        truth, predicted = truth_and_found(items[i], found[i], run.classes, CONF)
        name = html.escape(items[i].path.name)
        figures.append(f"<figure>{img(png_of_array(np.asarray(truth)), f'ground truth of {name}')} "
                       f"{img(png_of_array(np.asarray(predicted)), f'predictions on {name}')}<figcaption>{name}: "
                       f"{errors[i]['missed']} missed, {errors[i]['false']} false (left: ground truth, right: "
                       f"predictions)</figcaption></figure>")
    total = sum(1 for e in errors if e["missed"] + e["false"])
    return (f"{title}<p>{total} of {len(items)} test images have a missed or a false box (matched at IoU {IOU}, "
            f"boxes scoring at least {CONF}); the {len(worst)} with the most:</p>"
            f"<div class=mistakes>{''.join(figures)}</div>")


def _dataset_section(run: DetectionRun, test) -> str:
    counts = np.bincount(np.concatenate([item.labels for item in test] or [np.zeros(0, np.int64)]),
                         minlength=len(run.classes))
    rows = [[name, str(counts[k])] for k, name in enumerate(run.classes)]
    return (f"<h2>Dataset</h2><p>{html.escape(run.config.data.name)}: {len(test)} test images, "
            f"{int(counts.sum())} boxes, {len(run.classes)} classes.</p>{html_table(['class', 'test boxes'], rows)}")
