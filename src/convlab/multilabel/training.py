"""A multi-label classifier's loss, training step and validation: one sigmoid per class.

Targets arrive as (B, classes) 0/1 uint8 rows (data/arrays.py); the loss casts them to float. --class-weights auto
weights each label's positives by negatives / positives in the training rows (BCEWithLogitsLoss's pos_weight),
--label-smoothing pulls each target towards 0.5 by half the smoothing.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..evaluate.multilabel import average_precision

MAX_POS_WEIGHT = 100.0  # a label with one positive among thousands would otherwise dominate the loss


def positive_weights(labels: np.ndarray) -> np.ndarray:
    """(N, K) 0/1 training rows -> (K,) float64 negatives / positives per label, 1 where a label has no positive,
    at most MAX_POS_WEIGHT."""
    positives = labels.sum(axis=0).astype(np.float64)
    negatives = len(labels) - positives
    weights = np.ones(labels.shape[1])
    np.divide(negatives, positives, out=weights, where=positives > 0)
    return np.clip(weights, None, MAX_POS_WEIGHT)


class MultiLabelLoss(nn.Module):
    """The mean binary cross-entropy over every image and label, on logits."""

    def __init__(self, pos_weight: torch.Tensor | None = None, smoothing: float = 0.0):
        super().__init__()
        self.smoothing = smoothing
        self.bce = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.to(logits.dtype)
        if self.smoothing:
            targets = targets * (1 - self.smoothing) + self.smoothing / 2
        return self.bce(logits, targets)


def multilabel_step(model: nn.Module, batch, loss_fn: nn.Module):
    """Logits, the loss and the images whose labels are all right at 0.5 (the training 'accuracy' is the
    subset accuracy)."""
    images, targets = batch
    logits = model(images)
    loss = loss_fn(logits, targets)
    exact = ((logits.detach() >= 0) == (targets > 0)).all(dim=1).sum()
    return loss, len(targets), exact


def multilabel_validate(model: nn.Module, loader, loss_fn: nn.Module) -> dict:
    """val_loss, val_mean_ap (mean AP over the labels present in the validation rows), val_micro_f1 at 0.5 and
    val_accuracy (subset accuracy at 0.5)."""
    model.eval()
    loss_sum, seen, scores, truth = 0.0, 0, [], []
    with torch.inference_mode():
        for images, targets in loader:
            logits = model(images)
            loss_sum += float(loss_fn(logits, targets)) * len(targets)
            seen += len(targets)
            scores.append(logits.float().cpu())
            truth.append(targets.cpu())
    scores, truth = torch.cat(scores).numpy(), torch.cat(truth).numpy() > 0
    aps = [average_precision(truth[:, k], scores[:, k]) for k in range(truth.shape[1]) if truth[:, k].any()]
    predicted = scores >= 0
    tp = float((predicted & truth).sum())
    denominator = float(predicted.sum() + truth.sum())
    return {"val_loss": loss_sum / max(seen, 1), "val_mean_ap": float(np.mean(aps)) if aps else 0.0,
            "val_micro_f1": 2 * tp / denominator if denominator else 0.0,
            "val_accuracy": float((predicted == truth).all(axis=1).mean()) if seen else 0.0}
