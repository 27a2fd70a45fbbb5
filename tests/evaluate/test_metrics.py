"""Metrics against hand-computed values."""
import numpy as np
import pytest

from convlab.evaluate.metrics import classification_metrics


def one_hot_probs(predicted, k):
    probs = np.full((len(predicted), k), 0.01)
    probs[np.arange(len(predicted)), predicted] = 0.9
    return probs


def test_two_class_metrics_by_hand():
    labels = np.array([0, 0, 0, 1, 1])
    predicted = np.array([0, 0, 1, 1, 0])
    m = classification_metrics(labels, one_hot_probs(predicted, 2), ["a", "b"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # class a: tp 2, fp 1, fn 1 -> p 2/3 r 2/3; class b: tp 1, fp 1, fn 1 -> p 1/2 r 1/2
    assert m["per_class"]["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert "top5_accuracy" not in m


def test_top5_only_with_five_classes():
    labels = np.array([0, 1, 2, 3, 4, 5])
    probs = np.tile(np.arange(6, 0, -1, dtype=float), (6, 1))  # ranking 0 > 1 > ... > 5 for every row
    m = classification_metrics(labels, probs, list("abcdef"))
    assert m["accuracy"] == pytest.approx(1 / 6)
    assert m["top5_accuracy"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    k = 7
    labels = rng.integers(0, k - 1, size=300)  # the last class never occurs: zero support and zero division
    probs = rng.random((300, k))
    m = classification_metrics(labels, probs, [f"c{i}" for i in range(k)])
    predicted = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(labels, predicted, labels=list(range(k)), zero_division=0)
    assert m["confusion_matrix"] == confusion_matrix(labels, predicted, labels=list(range(k))).tolist()
    for i in range(k):
        assert m["per_class"][f"c{i}"] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i],
                                                         "support": s[i]})
    assert m["macro_f1"] == pytest.approx(f[s > 0].mean())
