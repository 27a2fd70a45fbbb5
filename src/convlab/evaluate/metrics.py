"""Test metrics of a classifier: accuracy, balanced accuracy, top-5, macro and per-class precision/recall/F1,
confusion.

Computed from the confusion matrix with NumPy (np.bincount) rather than sklearn.metrics: importing
sklearn costs 1.5-3 s of every run. tests/evaluate/test_metrics.py checks the values against sklearn.
"""
from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: row = true class, column = predicted class."""
    return np.bincount(np.asarray(labels) * k + np.asarray(predicted), minlength=k * k).reshape(k, k)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (sklearn's zero_division=0)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """labels: (N,) int; probs: (N, K). Returns the dict saved as the run's metrics.json."""
    k = len(classes)
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probs.argmax(axis=1)
    matrix = confusion(labels, predicted, k)
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    precision = _ratio(tp, matrix.sum(axis=0).astype(np.float64))
    recall = _ratio(tp, support.astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    metrics = {"accuracy": float((predicted == labels).mean()) if len(labels) else 0.0}
    if k >= 5:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == labels[:, None]).any(axis=1).mean())
    present = support > 0  # macro averages over the classes the data actually contains
    metrics["macro_precision"] = float(precision[present].mean()) if present.any() else 0.0
    metrics["macro_recall"] = float(recall[present].mean()) if present.any() else 0.0
    # sklearn's balanced_accuracy_score: the mean recall over the classes the labels hold, which is macro recall;
    # kept under its own name, the one imbalanced-data users look for
    metrics["balanced_accuracy"] = metrics["macro_recall"]
    metrics["macro_f1"] = float(f1[present].mean()) if present.any() else 0.0
    metrics["per_class"] = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(classes)
    }
    metrics["confusion_matrix"] = matrix.tolist()
    metrics["num_samples"] = int(len(labels))
    constant = constant_output_warning(probs, classes)
    if constant:
        metrics["warnings"] = [constant]
    return metrics


CONSTANT_SPREAD = 1e-3  # probabilities that differ less than this between all images: the input is ignored


def constant_output_warning(probs: np.ndarray, classes: list[str]) -> str | None:
    """A warning when the model answers the same for every image (one class, near-identical probabilities).

    Such a model evaluates to the share of one class and a loss near ln(classes) and says nothing else; the
    usual cause is BatchNorm running statistics that training did not move far enough from their start
    (docs/quickstart.md, "A model that answers the same for every image").
    """
    if len(probs) < 2:
        return None
    spread = float(np.abs(probs - probs.mean(axis=0)).max())
    predicted = np.unique(probs.argmax(axis=1))
    if len(predicted) > 1 or spread >= CONSTANT_SPREAD:
        return None
    return (f"the model gives the same output for every one of the {len(probs)} test images (all predicted as "
            f"{classes[int(predicted[0])]!r}, probabilities within {spread:.1e} of each other): it does not use "
            f"its input in evaluation. If training accuracy rose, BatchNorm running statistics are the usual "
            f"cause (torchvision's mobilenet_v3 updates them with momentum 0.01): train more "
            f"steps (more --epochs or a smaller --batch-size), or fine-tune pretrained weights (convlab "
            f"finetune --from torchvision:NAME); see docs/quickstart.md")
