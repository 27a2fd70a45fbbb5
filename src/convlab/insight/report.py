"""The run report: one self-contained HTML file per run (images as data URIs, no scripts, no network); a
classifier's sections here, a detector's in report_detection.py, a segmenter's in report_segmentation.py."""
from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

import numpy as np

from ..data.run_data import load_run_data, test_split
from ..data.splits import stratified_sample
from ..errors import ConvlabError
from ..evaluate.metrics import classification_metrics
from ..evaluate.mistakes import most_confident_mistakes
from ..evaluate.pictures import confusion_png, enlarged, hwc, png_of_array, png_of_figure
from ..evaluate.plots import new_figure
from ..layout import REPORT
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


# -- sections ----------------------------------------------------------------------------------------------
def _samples_figure(splits, classes: list[str]) -> bytes:
    shown = list(range(min(len(classes), MAX_CLASSES_SHOWN)))
    fig = new_figure((SAMPLES_PER_CLASS * 0.9 + 1, len(shown) * 0.9))
    axes = fig.subplots(len(shown), SAMPLES_PER_CLASS, squeeze=False)
    rng = np.random.default_rng(0)
    for row, c in enumerate(shown):
        members = np.flatnonzero(splits.train.labels == c)
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
    train_counts = np.bincount(splits.train.labels, minlength=len(splits.classes))
    test_counts = np.bincount(splits.test.labels, minlength=len(splits.classes))
    c, h, w = splits.shape
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td class=num>{train_counts[i]}</td>"
                   f"<td class=num>{test_counts[i]}</td></tr>" for i, name in enumerate(splits.classes))
    more = (f"<p class=note>sample rows show the first {MAX_CLASSES_SHOWN} of {len(splits.classes)} classes</p>"
            if len(splits.classes) > MAX_CLASSES_SHOWN else "")
    return (f"<h2>Dataset</h2><p>{html.escape(splits.name)}: {len(splits.train)} training images "
            f"(validation is held out of these) and {len(splits.test)} test images of {c}x{h}x{w}, "
            f"{len(splits.classes)} classes.</p>"
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


def _classification_parts(run: Run, methods) -> list[str]:
    """Results first (metrics, confusion, per class, curves, mistakes, attribution), then the config and the data."""
    conf = run.config
    try:
        data = load_run_data(conf, run.preprocess.channels, tuple(run.preprocess.size), f"run {run.path}")
    except ConvlabError as err:
        missing = (f"<h2>Dataset</h2><p class=note>the dataset could not be loaded here ({html.escape(str(err))}),"
                   f" so the report has no samples, no mistakes and no attribution.</p>")
        return ([_metrics_sections(run, run.metrics)] if run.metrics else []) + [
            curves_section(run), config_section(run), missing]
    test = test_split(data, run.classes, f"run {run.path}")
    labels = test.labels
    probs = run.predict_arrays(test.images)
    metrics = classification_metrics(labels, probs, run.classes)
    parts = [_metrics_sections(run, metrics), curves_section(run), _mistakes_section(run, test, probs, labels)]
    if methods:
        parts.append(_attribution_section(run, test, probs, labels, methods))
    return parts + [config_section(run), _dataset_section(run, data.splits)]


REPORT_PARTS = {"classify": _classification_parts, "detect": detection_parts,  # each task's sections
                "segment": segmentation_parts}


def build_report(run_dir: str | Path, out: str | Path | None = None,
                 methods: tuple[str, ...] | list[str] | None = None) -> Path:
    """Write the report of a run folder (any task) to `out` (default RUN_DIR/report.html); return its path.

    `methods`: a classifier report's attribution methods (default ATTRIBUTION_METHODS; [] leaves the section
    out); a detection or segmentation report refuses them by name.
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
