"""balanced_accuracy in metrics.json: by hand, against sklearn, and printed by training's summary and eval."""
from __future__ import annotations

import json

import numpy as np
import pytest

from convlab.evaluate.metrics import classification_metrics
from convlab.tasks import find_task
from cli_output import run_cli


def probs_for(predicted, k: int) -> np.ndarray:
    probs = np.full((len(predicted), k), 0.01)
    probs[np.arange(len(predicted)), predicted] = 0.9
    return probs


def test_balanced_accuracy_by_hand_on_an_imbalanced_case():
    # 8 of class a, 2 of b: predicting a everywhere is 80% accurate and 50% balanced
    labels = np.array([0] * 8 + [1] * 2)
    always_a = classification_metrics(labels, probs_for(np.zeros(10, dtype=int), 2), ["a", "b"])
    assert always_a["accuracy"] == pytest.approx(0.8)
    assert always_a["balanced_accuracy"] == pytest.approx(0.5)  # (8/8 + 0/2) / 2
    # 6 of 8 a right, 2 of 2 b right: (6/8 + 2/2) / 2
    predicted = np.array([0] * 6 + [1] * 2 + [1] * 2)
    assert classification_metrics(labels, probs_for(predicted, 2), ["a", "b"])["balanced_accuracy"] == \
        pytest.approx(0.875)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balanced_accuracy_matches_sklearn(seed):
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(seed)
    k = 6
    labels = rng.choice(k - 1, size=300, p=[0.6, 0.2, 0.1, 0.07, 0.03])  # class 5 never in the labels
    predicted = np.where(rng.random(300) < 0.7, labels, rng.integers(0, k, 300))  # and sometimes predicted
    metrics = classification_metrics(labels, probs_for(predicted, k), list("abcdef"))
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(labels, predicted)
    assert metrics["balanced_accuracy"] == pytest.approx(expected, abs=1e-12)


def test_metrics_json_holds_it_and_train_and_eval_print_it(digits_run, capsys):
    saved = json.loads((digits_run.path / "metrics.json").read_text())
    assert saved["balanced_accuracy"] == pytest.approx(saved["macro_recall"])  # the same quantity, its own name
    shown = f"balanced accuracy {saved['balanced_accuracy']:.4f}"
    assert find_task("classify").summary(saved).startswith(f"accuracy {saved['accuracy']:.4f}  {shown}  ")
    code, out, _ = run_cli(capsys, "eval", str(digits_run.path))
    assert code == 0 and shown in out.splitlines()[0]
