"""The run report: one self-contained HTML file per run (images as data URIs, no scripts, no network); a
classifier's sections here (single- and multi-label), a detector's in report_detection.py, a segmenter's in
report_segmentation.py."""
from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

import numpy as np

from ..data.run_data import load_run_data, test_split
from ..data.splits import stratified_sample
from ..errors import ConvlabError
from ..evaluate.calibration import BINS
from ..evaluate.mistakes import most_confident_mistakes
from ..evaluate.pictures import confusion_png, enlarged, hwc, png_of_array, png_of_figure, reliability_png
from ..evaluate.plots import new_figure
from ..layout import RELIABILITY, REPORT
from ..run import Run
from ..tasks import load_run, run_task, task_of
from .gradcam import overlay, run_grad_cam
from .page import config_section, curves_section, html_table, img, write_page
from .report_detection import detection_parts
from .report_segmentation import segmentation_parts

SAMPLES_PER_CLASS = 8
MAX_CLASSES_SHOWN = 20  # sample rows in the dataset picture
ATTRIBUTION_METHODS = ("gradcam", "saliency", "ig")  # the report's default: fast, and they pass the checks
ATTRIBUTION_MISTAKES, ATTRIBUTION_CORRECT = 6, 3  # images shown with every method's map
EVALUATED = 48  # test images the attribution table scores


# the calibration section's words for what one forecast is, by the run's task
FORECASTS = {"classify": "one forecast per test image: its top class's probability, right when that class is",
             "multilabel": "every (test image, label) pair is a yes/no forecast: the probability of the side "
                           "predicted at 0.5, right when the image has the label or not as predicted"}


def _has_label(labels: np.ndarray, classes: int) -> np.ndarray:
    """(N,) class indices or (N, K) multi-hot labels -> (N, K) bool: which images have which class."""
    labels = np.asarray(labels)
    return labels > 0 if labels.ndim == 2 else np.eye(classes, dtype=bool)[labels]


# -- sections ----------------------------------------------------------------------------------------------
def _samples_figure(splits, classes: list[str]) -> bytes:
    shown = list(range(min(len(classes), MAX_CLASSES_SHOWN)))
    fig = new_figure((SAMPLES_PER_CLASS * 0.9 + 1, len(shown) * 0.9))
    axes = fig.subplots(len(shown), SAMPLES_PER_CLASS, squeeze=False)
    rng = np.random.default_rng(0)
    has = _has_label(splits.train.labels, len(classes))
    for row, c in enumerate(shown):
        members = np.flatnonzero(has[:, c])
        picks = rng.choice(members, min(SAMPLES_PER_CLASS, len(members)), replace=False) if len(members) else []
        for col in range(SAMPLES_PER_CLASS):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(picks):
                image = hwc(splits.train.images[picks[col]])
                ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        axes[row, 0].text(-0.15, 0.5, classes[c], transform=axes[row, 0].transAxes, ha="right", va="center",
                          fontsize=9)
    fig.subplots_adjust(left=0.12, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    return png_of_figure(fig)


def _dataset_section(run: Run, splits) -> str:
    train_counts = _has_label(splits.train.labels, len(splits.classes)).sum(axis=0)
    test_counts = _has_label(splits.test.labels, len(splits.classes)).sum(axis=0)
    several = " (an image may have several)" if np.asarray(splits.train.labels).ndim == 2 else ""
    c, h, w = splits.shape
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td class=num>{train_counts[i]}</td>"
                   f"<td class=num>{test_counts[i]}</td></tr>" for i, name in enumerate(splits.classes))
    more = (f"<p class=note>sample rows show the first {MAX_CLASSES_SHOWN} of {len(splits.classes)} classes</p>"
            if len(splits.classes) > MAX_CLASSES_SHOWN else "")
    return (f"<h2>Dataset</h2><p>{html.escape(splits.name)}: {len(splits.train)} training images "
            f"(validation is held out of these) and {len(splits.test)} test images of {c}x{h}x{w}, "
            f"{len(splits.classes)} classes{several}.</p>"
            f"<table><tr><th>class</th><th>train</th><th>test</th></tr>{rows}</table>"
            f"<h3>Samples per class (training split)</h3>{img(_samples_figure(splits, splits.classes), 'samples')}"
            f"{more}")


def _metrics_sections(run: Run, metrics: dict) -> str:
    head = (f"<p>test accuracy <b>{metrics['accuracy']:.4f}</b>"
            + (f", top-5 {metrics['top5_accuracy']:.4f}" if "top5_accuracy" in metrics else "")
            + f", macro precision/recall/F1 {metrics['macro_precision']:.4f} / {metrics['macro_recall']:.4f} / "
              f"{metrics['macro_f1']:.4f} on {metrics['num_samples']} images</p>")
    confusion = img(confusion_png(metrics, run.classes), "confusion matrix")
    worst = min((row["f1"] for row in metrics["per_class"].values() if row["support"]), default=None)
    rows = []
    for name, row in metrics["per_class"].items():
        low = ' class="low"' if worst is not None and row["f1"] == worst and row["support"] else ""
        rows.append(f"<tr{low}><td>{html.escape(name)}</td><td class=num>{row['precision']:.3f}</td>"
                    f"<td class=num>{row['recall']:.3f}</td><td class=num>{row['f1']:.3f}</td>"
                    f"<td class=num>{row['support']}</td></tr>")
    table = ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
             + "".join(rows) + "</table><p class=note>shaded: the class with the lowest F1</p>")
    return (f"<h2>Test metrics</h2>{head}<h2>Confusion matrix</h2>{confusion}"
            f"<h2>Per class</h2>{table}")


def _multilabel_sections(metrics: dict) -> str:
    """A multi-label run's headline metrics and its table per label (each with its threshold)."""
    mean_ap = "n/a" if metrics["mean_ap"] is None else f"{metrics['mean_ap']:.4f}"
    head = (f"<p>test mean AP <b>{mean_ap}</b>, micro F1 {metrics['micro_f1']:.4f} (precision "
            f"{metrics['micro_precision']:.4f}, recall {metrics['micro_recall']:.4f}), macro F1 "
            f"{metrics['macro_f1']:.4f}, subset accuracy {metrics['subset_accuracy']:.4f}, Hamming loss "
            f"{metrics['hamming_loss']:.4f} on {metrics['num_samples']} images</p>")
    worst = min((row["f1"] for row in metrics["per_label"].values() if row["support"]), default=None)
    rows = []
    for name, row in metrics["per_label"].items():
        low = ' class="low"' if worst is not None and row["f1"] == worst and row["support"] else ""
        ap = "n/a" if row["ap"] is None else f"{row['ap']:.3f}"
        rows.append(f"<tr{low}><td>{html.escape(name)}</td><td class=num>{row['precision']:.3f}</td>"
                    f"<td class=num>{row['recall']:.3f}</td><td class=num>{row['f1']:.3f}</td>"
                    f"<td class=num>{ap}</td><td class=num>{row['support']}</td>"
                    f"<td class=num>{row['threshold']:.3f}</td></tr>")
    table = ("<table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>AP</th><th>support</th>"
             "<th>threshold</th></tr>" + "".join(rows) + "</table><p class=note>a label is predicted when its "
             "probability is at least its threshold (fitted on validation for the best F1, kept in "
             "preprocess.json); AP is n/a for a label with no positive test image; shaded: the label with the "
             "lowest F1. No confusion matrix and no most confident mistakes: an image has several labels, so "
             "no single predicted class is right or wrong.</p>")
    return f"<h2>Test metrics</h2>{head}<h2>Per label</h2>{table}"


def _calibration_section(run: Run, metrics: dict) -> str:
    """ECE and NLL on the test split (before -> after the fitted temperature, when there is one), and the
    reliability diagram: whether the probabilities can be read as the chance of being right."""
    if "ece" not in metrics:
        return "<h2>Calibration</h2><p class=note>the metrics hold no calibration (ECE, NLL)</p>"
    before = metrics.get("before_temperature")
    if before:
        line = (f"on the test split, before -> after the temperature fitted on validation: ECE <b>{before['ece']:.4f} "
                f"-> {metrics['ece']:.4f}</b>, NLL {before['nll']:.4f} -> {metrics['nll']:.4f} nats")
    else:
        line = f"on the test split: ECE <b>{metrics['ece']:.4f}</b>, NLL {metrics['nll']:.4f} nats"
    bins = len(metrics["reliability"]["count"]) if "reliability" in metrics else BINS
    png = reliability_png(run.path, metrics)
    diagram = img(png, "reliability diagram") if png else f"<p class=note>no {RELIABILITY} and no table to draw</p>"
    return (f"<h2>Calibration</h2><p>{line}.</p><p class=note>{FORECASTS[run.task]}; ECE averages the gap "
            f"between accuracy and confidence over {bins} bins of confidence; in the diagram, bars under the "
            f"diagonal mean over-confident.</p>{diagram}")


def _mistakes_section(run: Run, test, probs: np.ndarray, labels: np.ndarray) -> str:
    wrong = int((probs.argmax(1) != labels).sum())
    if wrong == 0:
        return "<h2>Most confident mistakes</h2><p>none: every test image is classified correctly.</p>"
    mistakes = most_confident_mistakes(probs, labels, run.classes)
    cams = run_grad_cam(run, test.images[[m.index for m in mistakes]])
    figures = []
    for m, heatmap in zip(mistakes, cams.heatmaps):
        big = enlarged(test.images[m.index])
        caption = (f"#{m.index}: true <b>{html.escape(m.true)}</b>, predicted <b>{html.escape(m.predicted)}</b> "
                   f"({m.prob:.2f})")
        figures.append(f"<figure>{img(png_of_array(big), f'test image {m.index}', pixel=True)} "
                       f"{img(png_of_array(overlay(big, heatmap)), f'Grad-CAM of test image {m.index}')}"
                       f"<figcaption>{caption}</figcaption></figure>")
    return (f"<h2>Most confident mistakes</h2><p>{wrong} of {len(labels)} test images are misclassified; "
            f"the {len(mistakes)} the model was surest about, each with the Grad-CAM of the predicted class at "
            f"layer <code>{html.escape(cams.layer)}</code> (red: the evidence it used).</p>"
            f"<div class=mistakes>{''.join(figures)}</div>")


def _attribution_section(run: Run, test, probs: np.ndarray, labels: np.ndarray, methods) -> str:
    """Each chosen method's maps on the surest mistakes and correct images, and its faithfulness table."""
    import importlib.util

    if importlib.util.find_spec("captum") is None or importlib.util.find_spec("zennit") is None:
        return ("<h2>Attribution</h2><p class=note>the attribution methods need captum and zennit: "
                "pip install -e '.[attribution]' in the convlab folder</p>")
    from .attribution import attribute  # lazy: start-up time
    from .attribution.evaluate import COLUMNS, table_cells  # lazy: start-up time
    from .attribution.figure import grid_figure, method_scales  # lazy: start-up time

    predicted = probs.argmax(1)
    surest = np.argsort(-probs.max(1), kind="stable")
    wrong = [i for i in surest if predicted[i] != labels[i]][:ATTRIBUTION_MISTAKES]
    right = [i for i in surest if predicted[i] == labels[i]][:ATTRIBUTION_CORRECT]
    shown = np.array(wrong + right, dtype=int)
    quiet = lambda _line: None  # noqa: E731  (the report prints nothing but its path)
    maps = attribute(run, test.images[shown], list(methods), log=quiet)
    sample = stratified_sample(test.labels, EVALUATED, seed=0)  # a folder's test split lists class after class
    scored = attribute(run, test.images[sample], list(methods), evaluate=True, log=quiet)
    captions = [f"#{i} {'wrong' if predicted[i] != labels[i] else 'right'}: {run.classes[labels[i]]} -> "
                f"{run.classes[predicted[i]]}" for i in shown]
    fig = grid_figure([hwc(test.images[i]) for i in shown], maps.maps, method_scales(maps.maps, maps.signed),
                      maps.signed, captions)
    table = html_table(COLUMNS, table_cells(scored.evaluation))
    return (f"<h2>Attribution</h2><p>Why the model decided, by {len(methods)} methods, on the "
            f"{len(wrong)} mistakes and {len(right)} correct test images it was surest about, for the predicted "
            f"class (signed maps: red for it, blue against; the others: red highest; one colour scale per "
            f"method).</p>{img(png_of_figure(fig), 'attribution maps')}"
            f"<h3>How faithful each method is on this model</h3><p class=note>on "
            f"{scored.evaluation[0]['images']} test images drawn from each class in proportion: "
            f"deletion/insertion AUC of the predicted class's "
            f"probability against a random map, and the Spearman correlation of the signed maps as layers are "
            f"randomized from the logits down (passes below 0.5; docs/attribution.md explains the scores)</p>{table}")


def _run_data(run: Run, missing: str):
    """(the run's data, None), or (None, the Dataset section saying it could not be loaded and what the report
    lacks for that: `missing`)."""
    try:
        return load_run_data(run.config, run.preprocess.channels, tuple(run.preprocess.size), f"run {run.path}"), None
    except ConvlabError as err:
        return None, (f"<h2>Dataset</h2><p class=note>the dataset could not be loaded here "
                      f"({html.escape(str(err))}), so the report has {missing}.</p>")


def _classification_parts(run: Run, methods) -> list[str]:
    """Results first (metrics, confusion, per class, calibration, curves, mistakes, attribution), then the config
    and the data."""
    data, missing = _run_data(run, "no samples, no mistakes and no attribution")
    if data is None:
        measured = [_metrics_sections(run, run.metrics), _calibration_section(run, run.metrics)] if run.metrics else []
        return measured + [curves_section(run), config_section(run), missing]
    test = test_split(data, run.classes, f"run {run.path}")
    labels = test.labels
    metrics, probs = run.scored(test)  # the run's own scoring: metrics and calibration (before and after T)
    parts = [_metrics_sections(run, metrics), _calibration_section(run, metrics), curves_section(run),
             _mistakes_section(run, test, probs, labels)]
    if methods:
        parts.append(_attribution_section(run, test, probs, labels, methods))
    return parts + [config_section(run), _dataset_section(run, data.splits)]


def _multilabel_parts(run: Run, methods) -> list[str]:
    """Results first (metrics, per label, calibration, curves), then the config and the data. No attribution:
    the task refuses report --method, and the default methods are left out, as a detector's are."""
    data, missing = _run_data(run, "no samples")
    if data is None:
        measured = [_multilabel_sections(run.metrics), _calibration_section(run, run.metrics)] if run.metrics else []
        return measured + [curves_section(run), config_section(run), missing]
    metrics = run.scored(test_split(data, run.classes, f"run {run.path}"))[0]
    return [_multilabel_sections(metrics), _calibration_section(run, metrics), curves_section(run),
            config_section(run), _dataset_section(run, data.splits)]


REPORT_PARTS = {"classify": _classification_parts, "multilabel": _multilabel_parts,  # each task's sections
                "detect": detection_parts, "segment": segmentation_parts}


def build_report(run_dir: str | Path, out: str | Path | None = None,
                 methods: tuple[str, ...] | list[str] | None = None) -> Path:
    """Write the report of a run folder (any task) to `out` (default RUN_DIR/report.html); return its path.

    `methods`: a classifier report's attribution methods (default ATTRIBUTION_METHODS; [] leaves the section
    out); a multi-label, detection or segmentation report refuses them by name.
    """
    if methods:
        run_task(run_dir).refuse("report --method", run_dir)
    run = load_run(run_dir, command="report")
    out = Path(out) if out else run.path / REPORT
    conf = run.config
    parts = [f"<h1>convlab run report: {html.escape(run.path.name)}</h1>",
             f"<p class=note>{html.escape(str(run.path))}; model {html.escape(conf.model.name)} on "
             f"{html.escape(conf.data.name)}; written {datetime.now():%Y-%m-%d %H:%M}</p>"]
    parts += REPORT_PARTS[task_of(run.config).name](run, ATTRIBUTION_METHODS if methods is None else methods)
    return write_page(out, f"convlab report: {run.path.name}", parts)
