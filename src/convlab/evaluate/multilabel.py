"""Metrics of a multi-label classifier (several labels per image): AP per label and its mean, F1, thresholds.

NumPy rather than sklearn.metrics, as in evaluate/metrics.py: importing sklearn costs 1.5-3 s of every run.
tests/evaluate/test_multilabel_metrics.py checks every value against sklearn.

Shapes: targets (N, K) 0/1 ints, probs (N, K) sigmoid probabilities, thresholds (K,); a label is predicted
when its probability is >= its threshold. zero_division=0 everywhere, as sklearn's zero_division=0.
"""
from __future__ import annotations

import numpy as np

from .metrics import _ratio

DEFAULT_THRESHOLD = 0.5  # the threshold of a label that f1_thresholds cannot tune (no positive in the rows)


def _ranked_counts(targets_1d: np.ndarray, scores_1d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At each distinct score t, highest first: (t, true positives, predicted positives) when predicting score >= t.

    targets_1d, scores_1d: (N,). Tied scores fall on the same side of every threshold, so the counts are read
    at the last row of each group of equal scores. Returns three (D,) arrays, D = number of distinct scores.
    """
    order = np.argsort(-np.asarray(scores_1d, dtype=np.float64), kind="mergesort")
    scores = np.asarray(scores_1d, dtype=np.float64)[order]
    hits = np.asarray(targets_1d)[order] > 0
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]  # (D,) end of each tie group
    tp = np.cumsum(hits)[last]
    return scores[last], tp, last + 1


def average_precision(targets_1d: np.ndarray, scores_1d: np.ndarray) -> float:
    """sklearn's average_precision_score: sum over distinct thresholds of (R_n - R_{n-1}) P_n, R_0 = 0.

    targets_1d: (N,) 0/1; scores_1d: (N,). Not interpolated (unlike VOC's 11-point AP), ties counted as one
    threshold. NaN when there is no positive (recall undefined): callers skip such labels.
    """
    positives = int((np.asarray(targets_1d) > 0).sum())
    if positives == 0:
        return float("nan")
    _, tp, predicted = _ranked_counts(targets_1d, scores_1d)
    recall = tp / positives
    precision = tp / predicted
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def multilabel_metrics(targets: np.ndarray, probs: np.ndarray, classes: list[str], thresholds: np.ndarray) -> dict:
    """targets: (N, K) 0/1; probs: (N, K); thresholds: (K,). Returns the JSON-ready dict saved as metrics.json.

    Keys: mean_ap, micro_f1, macro_f1, micro_precision, micro_recall, subset_accuracy, hamming_loss, per_label
    ({name: precision, recall, f1, ap, support, threshold}), num_samples, thresholds.
    mean_ap and macro_f1 average over the labels with support > 0 in these rows (a label absent from the data
    has no AP and an F1 of 0 that says nothing about the model); mean_ap is None when no label has a positive.
    """
    targets = np.asarray(targets).astype(bool)
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    k = len(classes)
    if targets.shape != probs.shape or probs.ndim != 2 or probs.shape[1] != k or len(thresholds) != k:
        raise ValueError(f"multilabel_metrics needs targets and probs of shape (N, K) and K = {k} "
                         f"classes and thresholds; got targets {targets.shape}, probs {probs.shape}, "
                         f"{len(thresholds)} thresholds")
    predicted = probs >= thresholds  # (N, K)
    tp = (predicted & targets).sum(axis=0).astype(np.float64)  # (K,)
    n_predicted = predicted.sum(axis=0).astype(np.float64)
    support = targets.sum(axis=0)
    precision = _ratio(tp, n_predicted)
    recall = _ratio(tp, support.astype(np.float64))
    f1 = _ratio(2 * precision * recall, precision + recall)
    ap = [average_precision(targets[:, i], probs[:, i]) if support[i] > 0 else None for i in range(k)]
    present = support > 0
    micro_precision = _ratio(np.array([tp.sum()]), np.array([n_predicted.sum()]))[0]
    micro_recall = _ratio(np.array([tp.sum()]), np.array([float(support.sum())]))[0]
    # micro F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted + true), the form that needs no 0/0 guard on P and R
    micro_f1 = _ratio(np.array([2 * tp.sum()]), np.array([n_predicted.sum() + support.sum()]))[0]
    n = len(targets)
    return {
        "mean_ap": float(np.mean([a for a in ap if a is not None])) if present.any() else None,
        "micro_f1": float(micro_f1),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "micro_precision": float(micro_precision),
        "micro_recall": float(micro_recall),
        "subset_accuracy": float((predicted == targets).all(axis=1).mean()) if n else 0.0,
        "hamming_loss": float((predicted != targets).mean()) if predicted.size else 0.0,
        "per_label": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "ap": ap[i],
                   "support": int(support[i]), "threshold": float(thresholds[i])}
            for i, name in enumerate(classes)
        },
        "num_samples": int(n),
        "thresholds": [float(t) for t in thresholds],
    }


def f1_thresholds(targets: np.ndarray, probs: np.ndarray, min_positives: int = 1) -> np.ndarray:
    """(K,) per label the threshold that maximises F1 on these rows (validation, never test): targets, probs (N, K).

    Candidates are the label's distinct probabilities (predict positive when prob >= t), so the best F1 on these
    rows is reached exactly. Ties go to the higher threshold (fewer positive predictions for the same F1).
    A label with fewer than `min_positives` positives in the rows (at least none) keeps DEFAULT_THRESHOLD (0.5):
    fitted to one or two images, a threshold is their probability, not the label's.
    One sort and one cumsum per label: O(N log N), not a pass over the rows per candidate.
    """
    targets = np.asarray(targets)
    probs = np.asarray(probs, dtype=np.float64)
    if targets.shape != probs.shape or probs.ndim != 2:
        raise ValueError(f"f1_thresholds needs targets and probs of the same shape (N, K); got {targets.shape} "
                         f"and {probs.shape}")
    out = np.full(probs.shape[1], DEFAULT_THRESHOLD)
    for i in range(probs.shape[1]):
        positives = int((targets[:, i] > 0).sum())
        if positives < max(min_positives, 1):
            continue
        candidates, tp, predicted = _ranked_counts(targets[:, i], probs[:, i])
        f1 = 2 * tp / (predicted + positives)  # 2 TP / (2 TP + FP + FN); the denominator is > 0
        out[i] = candidates[int(np.argmax(f1))]  # candidates run from high to low: argmax's first is the highest
    return out
