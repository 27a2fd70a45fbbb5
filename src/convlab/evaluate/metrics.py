"""Test metrics of a classifier: accuracy, top-5, macro and per-class precision/recall/F1, confusion."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """labels: (N,) int; probs: (N, K). Returns the dict saved as the run's metrics.json."""
    k = len(classes)
    predicted = probs.argmax(axis=1)
    ids = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=ids,
                                                                     zero_division=0)
    metrics = {"accuracy": float((predicted == labels).mean()) if len(labels) else 0.0}
    if k >= 5:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        metrics["top5_accuracy"] = float((top5 == labels[:, None]).any(axis=1).mean())
    present = support > 0  # macro averages over the classes the data actually contains
    metrics["macro_precision"] = float(precision[present].mean()) if present.any() else 0.0
    metrics["macro_recall"] = float(recall[present].mean()) if present.any() else 0.0
    metrics["macro_f1"] = float(f1[present].mean()) if present.any() else 0.0
    metrics["per_class"] = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(classes)
    }
    metrics["confusion_matrix"] = confusion_matrix(labels, predicted, labels=ids).tolist()
    metrics["num_samples"] = int(len(labels))
    return metrics
