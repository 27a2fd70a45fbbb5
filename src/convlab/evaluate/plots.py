"""The run's pictures (training curves, the confusion matrix) and convlab's one way to draw a figure.

Every convlab figure is a `new_figure()`: matplotlib's Figure API with no pyplot, so no global state and
no backend is chosen or switched (a notebook keeps its own), saved by the figure's own canvas
(`fig.savefig`) and freed with it. matplotlib is imported only when a picture is drawn, so commands that
draw nothing do not pay for the import.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def new_figure(figsize):
    """A matplotlib Figure outside pyplot; `fig.savefig(path or file)` writes it with its own canvas."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


# The panels of curves.png: (title, [(history key, label)]); a panel whose keys a task never logs is left out
# (a classifier has no mAP, a detector no accuracy, a segmenter logs mIoU).
CURVE_PANELS = [("loss", [("train_loss", "train"), ("val_loss", "validation")]),
                ("accuracy", [("train_accuracy", "train"), ("val_accuracy", "validation")]),
                ("mAP (validation)", [("val_map", "mAP@[.5:.95]"), ("val_map50", "AP50")]),
                ("labels (validation)", [("val_mean_ap", "mean AP"), ("val_micro_f1", "micro F1 at 0.5")]),
                ("mIoU (validation)", [("val_miou", "mIoU"), ("val_pixel_accuracy", "pixel accuracy")]),
                ("mask mAP (validation)", [("val_mask_map", "masks @[.5:.95]"), ("val_box_map", "boxes @[.5:.95]")])]


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss, accuracy (or mAP) and learning rate per epoch, train vs validation."""
    epochs = [row["epoch"] for row in history]
    panels = [(title, [(key, label) for key, label in keys if any(row.get(key) is not None for row in history)])
              for title, keys in CURVE_PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    fig = new_figure((13, 3.8))
    axes = fig.subplots(1, len(panels) + 1)
    for ax, (title, keys) in zip(axes, panels):
        for key, label in keys:
            ax.plot(epochs, [row.get(key) for row in history], marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[-1].plot(epochs, [row["lr"] for row in history], marker="o", color="tab:green")
    axes[-1].set_title("learning rate (end of epoch)")
    axes[-1].set_xlabel("epoch")
    axes[-1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path) -> None:
    """Counts with true class on rows, predicted on columns; cells annotated when the grid is small."""
    fig = confusion_figure(matrix, classes)
    fig.savefig(path, dpi=110)


def confusion_figure(matrix: list[list[int]], classes: list[str], title: str = "confusion matrix (test)"):
    """The confusion matrix as a matplotlib Figure (saved by plot_confusion_matrix, logged by TensorBoard)."""
    cm = np.asarray(matrix)
    size = max(4.5, 0.45 * len(classes) + 2)
    fig = new_figure((size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=45 if len(classes) > 5 else 0, ha="right")
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 30:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def warm_up() -> None:
    """Import matplotlib and draw one small figure with text to memory: fonts and the renderer load now."""
    fig = new_figure((2, 1.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], marker="o", label="warm-up")
    ax.set_title("warm-up")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png", dpi=50)


def draw_run_plots(history: list[dict], matrix: list[list[int]], classes: list[str], curves: Path,
                   confusion: Path, reliability: dict | None = None) -> None:
    """The run folder's pictures: the curves (when there is a history), the confusion matrix and the reliability
    diagram (`reliability`: {"table", "ece", "path"}, when the metrics hold one).

    The paths come from the caller: the child process runs this file without the convlab package.
    """
    if history:
        plot_curves(history, Path(curves))
    plot_confusion_matrix(matrix, classes, Path(confusion))
    if reliability is not None:
        plot_reliability(reliability["table"], reliability["ece"], Path(reliability["path"]))


def plot_reliability(table: dict, ece: float, path: Path, title: str | None = None) -> None:
    """A reliability diagram: accuracy per confidence bin against the diagonal, the count of forecasts per bin
    below (log scale, so a wild bar holding three images reads as such). Bars under the diagonal mean the model
    is over-confident. `table` is evaluate/calibration.py's reliability(): per-bin lower, upper, count,
    confidence and accuracy (None for an empty bin)."""
    lower = np.asarray(table["lower"], dtype=float)
    width = float(table["upper"][0] - table["lower"][0])
    accuracy = np.array([0.0 if a is None else a for a in table["accuracy"]])
    confidence = np.array([0.0 if c is None else c for c in table["confidence"]])
    fig = new_figure((5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(lower, accuracy, width=width, align="edge", edgecolor="black", color="tab:blue", label="accuracy")
    top.bar(lower, confidence - accuracy, bottom=accuracy, width=width, align="edge", color="tab:red", alpha=0.3,
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    top.set_title(f"{title + ': ' if title else ''}ECE {ece:.3f} ({len(lower)} bins, {sum(table['count'])} "
                  f"forecasts)")
    bottom.bar(lower, table["count"], width=width, align="edge", edgecolor="black", color="tab:gray")
    if max(table["count"], default=0) > 0:
        bottom.set_yscale("log")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# The child process: loads this file by path (not the convlab package, whose import costs torch's
# seconds), imports matplotlib while the parent is still busy, then draws the job read from stdin.
_CHILD = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("convlab_run_plots", sys.argv[1])
plots = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plots)
plots.warm_up()  # matplotlib's import and first drawing, done while the parent trains
job = json.load(sys.stdin)
plots.draw_run_plots(job["history"], job["matrix"], job["classes"], job["curves"], job["confusion"],
                     job.get("reliability"))
import os
os._exit(0)  # the PNGs are closed; skip tearing the interpreter down (0.3 s with matplotlib loaded)
"""


def start_plot_process() -> "PlotProcess | None":
    """A PlotProcess when matplotlib is not loaded yet; None (draw in-process) when it is, which costs
    nothing extra (a notebook, a test session, a second run in one process)."""
    return None if "matplotlib" in sys.modules else PlotProcess()


class PlotProcess:
    """Draws the run's plots in a child process started at the beginning of the run.

    matplotlib's import (~1 s) then overlaps the parent's own imports and set-up on another core
    instead of adding to the end of every run. If the child fails for any reason, the plots are
    drawn in this process, so a run folder never lacks them.
    """

    def __init__(self):
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, __file__], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError:
            self.proc = None

    def draw(self, history: list[dict], matrix: list[list[int]], classes: list[str], curves: Path,
             confusion: Path, reliability: dict | None = None) -> None:
        """Hand the job to the child and wait for it; draw here if it cannot."""
        reliability = None if reliability is None else {**reliability, "path": str(reliability["path"])}
        job = json.dumps({"history": history, "matrix": matrix, "classes": classes, "curves": str(curves),
                          "confusion": str(confusion), "reliability": reliability})
        if self.proc is not None:
            try:
                self.proc.communicate(job.encode(), timeout=300)
                if self.proc.returncode == 0:
                    return
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.close()
        draw_run_plots(history, matrix, classes, curves, confusion, reliability)

    def close(self) -> None:
        """Stop the child if it is still waiting (the run failed before its plots)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
