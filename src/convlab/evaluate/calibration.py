"""Calibration of predicted probabilities: reliability bins, ECE, NLL, temperature scaling and its diagram.

Guo et al. 2017, "On Calibration of Modern Neural Networks". Works for a classifier (targets (N,) int, probs
(N, K) softmax) and for a multi-label model (targets (N, K) 0/1, probs (N, K) sigmoid); the shape of targets
says which. NumPy at module level; torch only inside fit_temperature, matplotlib only inside draw_reliability.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import plot_reliability  # plots.py imports matplotlib only when it draws

BINS = 15  # Guo et al.'s number of equal-width confidence bins
EPS = 1e-12  # probabilities are clipped to [EPS, 1] before a log: a confident mistake costs ~27.6 nats, not inf
T_MIN, T_MAX = 0.05, 20.0  # fitted temperatures are clamped here: a label the data cannot inform stays sane


def _bin_index(confidences: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(N,) bin of each confidence: i when edges[i] < c <= edges[i + 1]; c == 0 goes to bin 0."""
    return np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, len(edges) - 2)


def reliability(confidences: np.ndarray, correct: np.ndarray, bins: int = BINS) -> dict:
    """Per-bin statistics over equal-width bins on [0, 1]: confidences (N,) in [0, 1], correct (N,) bool.

    Returns lists of length `bins`: lower, upper, count, confidence (mean), accuracy (mean); the means of an
    empty bin are None. A value on an edge goes to the lower bin (lower < c <= upper), as in Guo et al.
    """
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
    correct = np.asarray(correct, dtype=np.float64).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = _bin_index(confidences, edges)
    count = np.bincount(index, minlength=bins)
    confidence_sum = np.bincount(index, weights=confidences, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    return {
        "lower": edges[:-1].tolist(),
        "upper": edges[1:].tolist(),
        "count": count.tolist(),
        "confidence": [float(confidence_sum[i] / count[i]) if count[i] else None for i in range(bins)],
        "accuracy": [float(correct_sum[i] / count[i]) if count[i] else None for i in range(bins)],
    }


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """ECE = sum over bins of count / N * |accuracy - confidence|; confidences, correct: (N,)."""
    table = reliability(confidences, correct, bins)
    n = sum(table["count"])
    if n == 0:
        return 0.0
    return float(sum(count / n * abs(acc - conf)
                     for count, acc, conf in zip(table["count"], table["accuracy"], table["confidence"]) if count))


def _is_multilabel(probs: np.ndarray, targets: np.ndarray) -> bool:
    """True for targets (N, K) 0/1 beside probs (N, K); False for class indices (N,)."""
    if targets.ndim == 2 and targets.shape == probs.shape:
        return True
    if targets.ndim == 1 and probs.ndim == 2 and len(targets) == len(probs):
        return False
    raise ValueError(f"calibration needs probs (N, K) with targets (N,) class indices or (N, K) 0/1 labels; "
                     f"got probs {probs.shape} and targets {targets.shape}")


def calibration_inputs(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidences, correct) of the forecasts that ECE bins.

    Classifier (targets (N,) int, probs (N, K) softmax): one forecast per image, confidence = max prob,
    correct = (argmax == target); returns two (N,) arrays.
    Multi-label (targets (N, K) 0/1, probs (N, K) sigmoid): every (image, label) pair is one binary forecast,
    confidence = max(p, 1 - p) (the probability of the side it predicts), correct = ((p >= 0.5) == target);
    returns two (N * K,) arrays.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if _is_multilabel(probs, targets):
        p = probs.reshape(-1)
        return np.maximum(p, 1.0 - p), (p >= 0.5) == (targets.reshape(-1) > 0)
    return probs.max(axis=1), probs.argmax(axis=1) == targets


def negative_log_likelihood(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean NLL in nats: classifier, -log p[target] over N images; multi-label, binary cross-entropy over N * K.

    probs (N, K); targets (N,) int or (N, K) 0/1. Probabilities (and 1 - p) are clipped to [1e-12, 1].
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets)
    if _is_multilabel(probs, targets):
        t = (targets > 0).astype(np.float64)
        log_p = np.log(np.clip(probs, EPS, 1.0))
        log_not_p = np.log(np.clip(1.0 - probs, EPS, 1.0))
        return float(-(t * log_p + (1.0 - t) * log_not_p).mean())
    picked = probs[np.arange(len(targets)), targets.astype(np.int64)]
    return float(-np.log(np.clip(picked, EPS, 1.0)).mean())


def calibration_metrics(probs: np.ndarray, targets: np.ndarray) -> dict:
    """{"ece", "nll", "bins"} (JSON-ready) for probs (N, K) and targets (N,) or (N, K); see calibration_inputs."""
    confidences, correct = calibration_inputs(probs, targets)
    return {"ece": expected_calibration_error(confidences, correct, BINS),
            "nll": negative_log_likelihood(probs, targets), "bins": BINS}


def fit_temperature(logits: np.ndarray, targets: np.ndarray, max_iter: int = 100) -> float | list[float]:
    """Temperature scaling: the T > 0 minimising the NLL of the scaled logits on held-out (validation) rows.

    Classifier (logits (N, K), targets (N,) int): one T for softmax(logits / T); returns a float.
    Multi-label (targets (N, K) 0/1): one T per label for sigmoid(logits / T); returns a list of K floats.
    log T is optimised (T stays positive, no constraint needed) with L-BFGS in float64 from T = 1; T is clamped
    to [0.05, 20]. Dividing by one T > 0 per row or per label never changes an argmax or a ranking, so accuracy
    and AP are unchanged: only the probabilities move.
    """
    import torch

    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    targets = np.asarray(targets)
    multilabel = _is_multilabel(np.asarray(logits), targets)
    if multilabel:
        y = torch.as_tensor(targets > 0, dtype=torch.float64)
        log_t = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)

        def loss_of(log_t):
            # sum over labels of each label's mean BCE: the K problems are independent, so one joint L-BFGS
            # solves each as if alone
            per_entry = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y, reduction="none")
            return per_entry.mean(dim=0).sum()
    else:
        y = torch.as_tensor(targets, dtype=torch.int64)
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)

        def loss_of(log_t):
            return torch.nn.functional.cross_entropy(z / log_t.exp(), y)

    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_of(log_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = log_t.detach().exp().clamp(T_MIN, T_MAX)
    return temperature.tolist() if multilabel else float(temperature)


def apply_temperature(logits: np.ndarray, temperature: float | np.ndarray | list[float]) -> np.ndarray:
    """logits (N, K) / T: T a float (classifier) or (K,) one per label (multi-label), broadcast over rows."""
    return np.asarray(logits, dtype=np.float64) / np.asarray(temperature, dtype=np.float64)


def draw_reliability(path: str | Path, probs: np.ndarray, targets: np.ndarray, title: str | None = None) -> None:
    """A reliability diagram PNG of these forecasts (evaluate/plots.py draws it; ECE in the title)."""
    confidences, correct = calibration_inputs(probs, targets)
    plot_reliability(reliability(confidences, correct, BINS), expected_calibration_error(confidences, correct, BINS),
                     Path(path), title)


def calibration_report(probs: np.ndarray, targets: np.ndarray, raw_probs: np.ndarray | None = None) -> dict:
    """What a run's metrics.json says of its probabilities: ece, nll and the reliability table; with `raw_probs`
    (the same forecasts without the run's temperature) also before_temperature: {ece, nll}."""
    confidences, correct = calibration_inputs(probs, targets)
    report = {"ece": expected_calibration_error(confidences, correct, BINS),
              "nll": negative_log_likelihood(probs, targets), "reliability": reliability(confidences, correct, BINS)}
    if raw_probs is not None:
        before = calibration_metrics(raw_probs, targets)
        report["before_temperature"] = {"ece": before["ece"], "nll": before["nll"]}
    return report
