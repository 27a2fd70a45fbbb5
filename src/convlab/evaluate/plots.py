"""The run's pictures: training curves and the confusion matrix (PNG, no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss, accuracy and learning rate per epoch, train vs validation."""
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, metric in zip(axes[:2], ("loss", "accuracy")):
        ax.plot(epochs, [row[f"train_{metric}"] for row in history], marker="o", label="train")
        val = [row.get(f"val_{metric}") for row in history]
        if any(v is not None for v in val):
            ax.plot(epochs, val, marker="o", label="validation")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].plot(epochs, [row["lr"] for row in history], marker="o", color="tab:green")
    axes[2].set_title("learning rate (end of epoch)")
    axes[2].set_xlabel("epoch")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path) -> None:
    """Counts with true class on rows, predicted on columns; cells annotated when the grid is small."""
    fig = confusion_figure(matrix, classes)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def confusion_figure(matrix: list[list[int]], classes: list[str], title: str = "confusion matrix (test)"):
    """The confusion matrix as a matplotlib Figure (saved by plot_confusion_matrix, logged by TensorBoard)."""
    cm = np.asarray(matrix)
    size = max(4.5, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
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
