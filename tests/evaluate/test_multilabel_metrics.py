"""Multi-label metrics against hand-computed values and against sklearn."""
import numpy as np
import pytest

from convlab.evaluate.multilabel import average_precision, f1_thresholds, multilabel_metrics


def test_average_precision_by_hand():
    # ranked: 0.9 (pos) 0.8 (neg) 0.7 (pos) 0.6 (neg); 2 positives
    # t=0.9: P 1/1 R 1/2 -> 1/2 * 1; t=0.8: P 1/2 R 1/2 -> 0; t=0.7: P 2/3 R 1 -> 1/2 * 2/3; t=0.6: R stays 1 -> 0
    assert average_precision(np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6])) == pytest.approx(0.5 + 1 / 3)


def test_average_precision_counts_tied_scores_as_one_threshold():
    # 0.5 holds a positive and a negative: t=0.5 predicts both -> P 1/2 R 1/2 (never P 1 R 1/2)
    # t=0.2: P 2/3 R 1 -> AP = 1/2 * 1/2 + 1/2 * 2/3
    assert average_precision(np.array([1, 0, 1]), np.array([0.5, 0.5, 0.2])) == pytest.approx(0.25 + 1 / 3)


def test_average_precision_without_positives_is_nan():
    assert np.isnan(average_precision(np.array([0, 0, 0]), np.array([0.1, 0.5, 0.9])))


TARGETS = np.array([[1, 0, 0],
                    [1, 1, 0],
                    [0, 1, 0],
                    [0, 0, 0]])
PROBS = np.array([[0.9, 0.2, 0.4],
                  [0.4, 0.8, 0.1],
                  [0.6, 0.7, 0.2],
                  [0.1, 0.3, 0.2]])
THRESHOLDS = np.array([0.5, 0.5, 0.3])
# predicted (probs >= thresholds):
#   [[1, 0, 1],
#    [0, 1, 0],
#    [1, 1, 0],
#    [0, 0, 0]]


def test_multilabel_metrics_by_hand():
    m = multilabel_metrics(TARGETS, PROBS, ["cat", "dog", "car"], THRESHOLDS)
    # cat: tp 1 (row 0), fp 1 (row 2), fn 1 (row 1) -> P 1/2 R 1/2 F1 1/2
    # AP: ranked 0.9 (pos) 0.6 (neg) 0.4 (pos) 0.1 -> 1/2 * 1 + 1/2 * 2/3 = 5/6
    assert m["per_label"]["cat"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "ap": 5 / 6,
                                                   "support": 2, "threshold": 0.5})
    # dog: tp 2, no fp, no fn; its two positives rank first -> AP 1
    assert m["per_label"]["dog"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "ap": 1.0,
                                                   "support": 2, "threshold": 0.5})
    # car: no positive; one false positive (row 0) -> everything 0, AP undefined
    assert m["per_label"]["car"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "ap": None, "support": 0,
                                     "threshold": 0.3}
    # micro: tp 3, predicted 5, true 4 -> P 3/5, R 3/4, F1 2*3 / (5 + 4) = 2/3
    assert m["micro_precision"] == pytest.approx(0.6)
    assert m["micro_recall"] == pytest.approx(0.75)
    assert m["micro_f1"] == pytest.approx(2 / 3)
    # macro over cat and dog only (car has no support): (1/2 + 1) / 2; mean AP (5/6 + 1) / 2
    assert m["macro_f1"] == pytest.approx(0.75)
    assert m["mean_ap"] == pytest.approx(11 / 12)
    # only row 3 is predicted exactly; wrong entries: (0, car), (1, cat), (2, cat) -> 3 of 12
    assert m["subset_accuracy"] == pytest.approx(0.25)
    assert m["hamming_loss"] == pytest.approx(0.25)
    assert m["num_samples"] == 4
    assert m["thresholds"] == [0.5, 0.5, 0.3]


def test_multilabel_metrics_rejects_mismatched_thresholds():
    with pytest.raises(ValueError, match="2 thresholds"):
        multilabel_metrics(TARGETS, PROBS, ["cat", "dog", "car"], np.array([0.5, 0.5]))


def random_case(seed, n=200, k=6):
    """Targets and probs with a label without positives (4), a label never predicted (5) and tied scores."""
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, k)) < rng.uniform(0.1, 0.6, size=k)).astype(np.int64)
    targets[:, 4] = 0
    # informative but noisy scores, rounded to 2 decimals so that many scores tie
    probs = np.clip(0.35 * targets + rng.random((n, k)) * 0.65, 0, 1).round(2)
    probs[:, 5] *= 0.4  # all < 0.5: never predicted at threshold 0.5
    thresholds = np.array([0.5, 0.4, 0.6, 0.5, 0.5, 0.5])
    return targets, probs, thresholds


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_multilabel_metrics_match_sklearn(seed):
    from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, hamming_loss,
                                 precision_recall_fscore_support, precision_score, recall_score)

    targets, probs, thresholds = random_case(seed)
    k = targets.shape[1]
    classes = [f"l{i}" for i in range(k)]
    m = multilabel_metrics(targets, probs, classes, thresholds)
    predicted = (probs >= thresholds).astype(np.int64)
    assert predicted[:, 5].sum() == 0 and targets[:, 4].sum() == 0 and targets[:, 5].sum() > 0
    present = targets.sum(axis=0) > 0

    p, r, f, s = precision_recall_fscore_support(targets, predicted, average=None, zero_division=0)
    for i, name in enumerate(classes):
        row = m["per_label"][name]
        assert row["precision"] == pytest.approx(p[i])
        assert row["recall"] == pytest.approx(r[i])
        assert row["f1"] == pytest.approx(f[i])
        assert row["support"] == s[i]
        assert row["threshold"] == thresholds[i]
        if present[i]:
            assert row["ap"] == pytest.approx(average_precision_score(targets[:, i], probs[:, i]))
        else:
            assert row["ap"] is None
    assert m["mean_ap"] == pytest.approx(average_precision_score(targets[:, present], probs[:, present],
                                                                 average="macro"))
    assert m["micro_f1"] == pytest.approx(f1_score(targets, predicted, average="micro", zero_division=0))
    assert m["micro_precision"] == pytest.approx(precision_score(targets, predicted, average="micro",
                                                                 zero_division=0))
    assert m["micro_recall"] == pytest.approx(recall_score(targets, predicted, average="micro", zero_division=0))
    assert m["macro_f1"] == pytest.approx(f1_score(targets[:, present], predicted[:, present], average="macro",
                                                   zero_division=0))
    assert m["subset_accuracy"] == pytest.approx(accuracy_score(targets, predicted))
    assert m["hamming_loss"] == pytest.approx(hamming_loss(targets, predicted))
    assert m["num_samples"] == len(targets)


def test_f1_thresholds_by_hand():
    targets = np.array([[1, 0], [1, 0], [0, 0], [1, 0], [0, 0], [0, 0]])
    probs = np.array([[0.9, 0.9], [0.8, 0.1], [0.7, 0.2], [0.4, 0.3], [0.3, 0.4], [0.1, 0.5]])
    # label 0, 3 positives; F1 = 2 TP / (predicted + 3) at each t:
    #   0.9: 2/4 = 0.5   0.8: 4/5 = 0.8   0.7: 4/6   0.4: 6/7 (best)   0.3: 6/8   0.1: 6/9
    # label 1 has no positive: stays at 0.5
    assert f1_thresholds(targets, probs).tolist() == [0.4, 0.5]
    m = multilabel_metrics(targets, probs, ["a", "b"], f1_thresholds(targets, probs))
    assert m["per_label"]["a"]["f1"] == pytest.approx(6 / 7)


def test_f1_thresholds_break_ties_with_the_higher_threshold():
    # 2 positives: t=0.9 -> 2/3; 0.8 -> 2/4; 0.7 -> 2/5; 0.6 -> 4/6 = 2/3, tied with 0.9: 0.9 wins
    targets = np.array([[1], [0], [0], [1]])
    probs = np.array([[0.9], [0.8], [0.7], [0.6]])
    assert f1_thresholds(targets, probs).tolist() == [0.9]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_thresholds_beat_every_other_candidate(seed):
    from sklearn.metrics import f1_score

    targets, probs, _ = random_case(seed, n=120)
    chosen = f1_thresholds(targets, probs)
    assert chosen[4] == 0.5  # no positives
    for i in range(targets.shape[1]):
        if targets[:, i].sum() == 0:
            continue
        # brute force: F1 of every distinct probability used as the threshold
        scores = {t: f1_score(targets[:, i], probs[:, i] >= t, zero_division=0) for t in np.unique(probs[:, i])}
        best = max(scores.values())
        assert chosen[i] in scores
        assert scores[chosen[i]] == pytest.approx(best)
        assert chosen[i] == max(t for t, f in scores.items() if f >= best - 1e-12)


def test_f1_thresholds_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3, 2\) and \(3, 1\)"):
        f1_thresholds(np.zeros((3, 2)), np.zeros((3, 1)))


def test_labels_with_too_few_positives_keep_the_default_threshold():
    targets = np.array([[1, 1], [0, 1], [0, 1], [0, 0]])
    probs = np.array([[0.2, 0.9], [0.1, 0.8], [0.05, 0.7], [0.3, 0.1]])
    # label 0 has one positive (prob 0.2): tuned alone it would be 0.2; label 1 has three: tuned to 0.7
    np.testing.assert_allclose(f1_thresholds(targets, probs), [0.2, 0.7])
    np.testing.assert_allclose(f1_thresholds(targets, probs, min_positives=2), [0.5, 0.7])
