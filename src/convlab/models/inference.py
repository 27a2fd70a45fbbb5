"""Running a model without autograd: class probabilities for predict, loss and accuracy for validation."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.batches import Normalization


def predict_proba(model: nn.Module, images: np.ndarray, norm: Normalization, device: torch.device | str = "cpu",
                  batch_size: int = 256) -> np.ndarray:
    """images: (N, C, H, W) uint8 -> probabilities (N, classes) float64."""
    return softmax(predict_logits(model, images, norm, device, batch_size))


def predict_logits(model: nn.Module, images: np.ndarray, norm: Normalization, device: torch.device | str = "cpu",
                   batch_size: int = 256) -> np.ndarray:
    """images: (N, C, H, W) uint8 -> logits (N, classes) float32 (the server returns them beside probabilities)."""
    device = torch.device(device)
    # eval() sets an attribute on every module; skip it when no module (not only the top one) is training.
    if any(m.training for m in model.modules()):
        model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = np.require(images[start:start + batch_size], requirements="W")  # copies read-only memmaps
            batch = torch.from_numpy(chunk).to(device)
            out.append(model(norm.apply(batch)).float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, classes) float32 logits -> probabilities float64 (softmax in float32, as predict has always done)."""
    if logits.size == 0:
        return np.zeros(logits.shape)
    return torch.softmax(torch.from_numpy(logits), dim=1).double().numpy()


def evaluate_loss_accuracy(model: nn.Module, loader, loss_fn) -> dict[str, float]:
    """Mean loss and accuracy over a BatchLoader (used for validation during training)."""
    model.eval()
    # Sums stay on the model's device: one host sync at the end, not one per batch.
    loss_sum, correct, seen = 0.0, 0, 0
    with torch.inference_mode():
        for images, labels in loader:
            logits = model(images)
            loss_sum = loss_sum + loss_fn(logits, labels).float() * len(labels)
            correct = correct + (logits.argmax(1) == labels).sum()
            seen += len(labels)
    return {"loss": float(loss_sum) / max(seen, 1), "accuracy": float(correct) / max(seen, 1)}
