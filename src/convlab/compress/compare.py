"""One table of model variants: size, test metric and latency per image at batch 1 and 64, plus a bar chart.

Every variant is evaluated on its run's own test split (variants of one run share it; `data` puts every
variant on that dataset's split) and timed in this process, one after another, on this machine's CPU: the
numbers compare variants with each other, not with other machines. When the rows were scored on different
splits, the table says per row which. The metric is the runs' task's test metric (accuracy for classifiers,
mAP@[.5:.95] for detectors, mIoU for segmenters); one table holds runs of one task.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from rich.table import Table

from ..errors import ConvlabError
from ..evaluate.plots import new_figure
from ..tasks import task_of
from .measure import MB, file_size, gzip_size, measure_latency, weight_sparsity
from .load import load_variant
from .quantize import QuantizedRun, quantized_engine
from .variant import variant_kind, weights_path

BATCH_SIZES = (1, 64)
# a task's test metric as the table and the chart name it
METRIC_NAMES = {"accuracy": "accuracy", "mean_ap": "mean AP", "map": "mAP", "miou": "mIoU"}

# Each task's test split (loaded once for the variants of one run) and its metrics on it.
TEST_SPLITS = {"classify": (lambda run, data, data_dir: run.test_data(data, data_dir),
                            lambda run, test: run.evaluate(arrays=test)),
               "multilabel": (lambda run, data, data_dir: run.test_data(data, data_dir),
                              lambda run, test: run.evaluate(arrays=test)),
               "detect": (lambda run, data, data_dir: run.test_items(data, data_dir),
                          lambda run, test: run.evaluate(items=test[0], classes=test[1])),
               "segment": (lambda run, data, data_dir: run.test_items(data, data_dir),
                           lambda run, test: run.evaluate(items=test[0], classes=test[1]))}


def variant_label(path: Path) -> str:
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.is_file() else path.name


def compare(paths: list[str | Path], data: str | None = None, data_dir: str | None = None,
            latency_seconds: float = 0.5, threads: int = 1) -> list[dict]:
    """Evaluate and time each run, variant folder or .onnx file; one dict per variant, in order."""
    rows = []
    test_sets: dict[tuple, object] = {}
    tasks = set()
    for path in paths:
        run = load_variant(path, command="compare")
        task = task_of(run.config)
        tasks.add(task.name)
        if len(tasks) > 1:
            raise ConvlabError(f"compare ranks runs of one task by its test metric; {path} is a {task.name} run "
                               f"and the others are not: compare them separately")
        conf = run.config.data
        load_split, evaluate = TEST_SPLITS[task.name]
        # Variants of one run share its test split; the key is what defines it (data, folder, size, classes).
        key = (data or conf.name, data_dir if data_dir is not None else (conf.data_dir if data is None else None),
               conf.image_size, None if data else conf.classes, str(run.preprocess.to_json()), tuple(run.classes))
        if key not in test_sets:
            test_sets[key] = load_split(run, data, data_dir)
        context = quantized_engine(run.engine) if isinstance(run, QuantizedRun) else nullcontext()
        with context:
            metrics = evaluate(run, test_sets[key])
            latency = measure_latency(run, BATCH_SIZES, latency_seconds, threads)
        weights = weights_path(run)
        model = getattr(run, "model", None)
        sparsity = weight_sparsity(model) if isinstance(model, torch.nn.Module) and \
            not isinstance(run, QuantizedRun) else None
        rows.append({"variant": variant_label(path), "kind": variant_kind(run), "model": run.config.model.name,
                     "path": str(path), "size_mb": file_size(weights) / MB, "gzip_mb": gzip_size(weights) / MB,
                     "sparsity": sparsity, "metric": task.test_metric, task.test_metric: metrics[task.test_metric],
                     "test_data": data or conf.name,
                     "test_images": metrics.get("num_samples", metrics.get("num_images")),  # classify's, the others'
                     "threads": threads or torch.get_num_threads(),
                     **{f"ms_per_image_batch_{b}": latency[f"batch_{b}"] for b in BATCH_SIZES}})
    return rows


def shared_test_split(rows: list[dict]) -> str | None:
    """"360 test images of digits" when every row was scored on one split; None when they differ."""
    splits = {(row["test_data"], row["test_images"]) for row in rows}
    if len(splits) != 1:
        return None
    data, images = splits.pop()
    return f"{images:,} test images of {data}"


def _columns(rows: list[dict]) -> list[tuple[str, str, Callable[[dict], str]]]:
    """(header, justify, cell) per column; a "test data" column when the rows were scored on different splits."""
    columns = [("variant", "left", lambda r: r["variant"]), ("kind", "left", lambda r: r["kind"]),
               ("model", "left", lambda r: r["model"])]
    if shared_test_split(rows) is None:
        columns.append(("test data", "left", lambda r: f"{r['test_data']} ({r['test_images']:,})"))
    return columns + [
        ("size MB", "right", lambda r: f"{r['size_mb']:.3f}"), ("gzip MB", "right", lambda r: f"{r['gzip_mb']:.3f}"),
        ("sparsity", "right", lambda r: "-" if r["sparsity"] is None else f"{r['sparsity']:.2f}"),
        (_metric_name(rows), "right", lambda r: _score_text(_score(r))),
        ("ms/img b=1", "right", lambda r: f"{r['ms_per_image_batch_1']:.4f}"),
        ("ms/img b=64", "right", lambda r: f"{r['ms_per_image_batch_64']:.4f}")]


def _metric_name(rows: list[dict]) -> str:
    metric = rows[0].get("metric", "accuracy") if rows else "accuracy"
    return METRIC_NAMES.get(metric, metric)


def _score(row: dict) -> float | None:
    """The row's test metric (rows written before detection have no "metric": accuracy)."""
    return row[row.get("metric", "accuracy")]


def _score_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table_title(rows: list[dict]) -> str:
    """What the metric was scored on and how latency was timed."""
    threads = rows[0]["threads"] if rows else 0
    scored = shared_test_split(rows) or (f"{_metric_name(rows)} on each row's own test split (test data: dataset "
                                         f"and images)")
    return (f"{scored}; latency: ms per image (fastest of repeated calls), {threads} CPU thread"
            f"{'s' if threads != 1 else ''}")


def comparison_table(rows: list[dict]) -> Table:
    table = Table(title=table_title(rows))
    columns = _columns(rows)
    for header, justify, _ in columns:
        table.add_column(header, justify=justify)
    for row in rows:
        table.add_row(*(cell(row) for _, _, cell in columns))
    return table


def markdown_table(rows: list[dict]) -> str:
    """The same table in Markdown, for notes and docs, under its title."""
    columns = _columns(rows)
    lines = [table_title(rows), "", "| " + " | ".join(header for header, _, _ in columns) + " |",
             "| " + " | ".join("---" if justify == "left" else "---:" for _, justify, _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(row) for _, _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


def plot_comparison(rows: list[dict], path: Path) -> None:
    """Three panels of horizontal bars: size, test metric, latency per image at batch 1 and 64."""
    import numpy as np

    labels = [row["variant"] for row in rows]
    y = np.arange(len(rows))
    fig = new_figure((15, 1.2 + 0.45 * len(rows)))
    axes = fig.subplots(1, 3, sharey=True)
    axes[0].barh(y, [row["size_mb"] for row in rows], color="tab:blue", label="file")
    axes[0].barh(y, [row["gzip_mb"] for row in rows], color="tab:cyan", height=0.4, label="gzip -9")
    axes[0].set_title("size (MB)")
    axes[0].legend(fontsize=8)
    scores = [_score(row) or 0.0 for row in rows]  # a metric COCO cannot define is drawn as 0
    axes[1].barh(y, scores, color="tab:green")
    axes[1].set_xlim(max(0.0, min(scores) - 0.05), 1.0)
    axes[1].set_title(f"test {_metric_name(rows)}")
    for i, value in enumerate(scores):
        axes[1].text(value, i, f" {value:.4f}", va="center", fontsize=8)
    axes[2].barh(y - 0.2, [row["ms_per_image_batch_1"] for row in rows], height=0.4, label="batch 1",
                 color="tab:orange")
    axes[2].barh(y + 0.2, [row["ms_per_image_batch_64"] for row in rows], height=0.4, label="batch 64",
                 color="tab:red")
    axes[2].set_title("latency (ms per image)")
    axes[2].legend(fontsize=8)
    axes[0].set_yticks(y, labels)
    axes[0].invert_yaxis()
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
