"""The most confident mistakes: which test images the report and the Runs page show as the model's worst."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISTAKES = 12  # shown at most


@dataclass
class Mistake:
    index: int  # the row of the test split
    true: str
    predicted: str
    prob: float  # the probability the model gave its (wrong) prediction


def most_confident_mistakes(probs: np.ndarray, labels: np.ndarray, classes: list[str],
                            limit: int = MISTAKES) -> list[Mistake]:
    """The misclassified rows of probs (N, K), the most confident first, at most `limit`."""
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")][:limit]
    return [Mistake(int(i), classes[labels[i]], classes[predicted[i]], float(probs[i, predicted[i]])) for i in order]
