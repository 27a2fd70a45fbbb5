"""The NumPy stratified split against sklearn's train_test_split (sizes and per-class counts)."""
import numpy as np
import pytest

from convlab.data.splits import stratified_split
from convlab.errors import ConvlabError


@pytest.mark.parametrize("counts,fraction", [([50, 30, 20], 0.1), ([7, 7, 7, 7], 0.25), ([100, 3, 2], 0.2),
                                             ([800, 720, 750, 690], 0.1), ([5, 5], 0.5)])
def test_sizes_and_class_counts_match_sklearn(counts, fraction):
    from sklearn.model_selection import train_test_split

    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(labels)
    keep, held = stratified_split(labels, fraction, seed=3)
    sk_keep, sk_held = train_test_split(np.arange(len(labels)), test_size=fraction, random_state=3,
                                        stratify=labels)
    assert len(held) == len(sk_held) and len(keep) == len(sk_keep)
    ours, theirs = np.bincount(labels[held], minlength=len(counts)), np.bincount(labels[sk_held],
                                                                                minlength=len(counts))
    assert np.abs(ours - theirs).max() <= 1, (ours, theirs)
    assert (np.bincount(labels[keep], minlength=len(counts)) >= 1).all()
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(labels)))


def test_seeded_and_seed_sensitive():
    labels = np.repeat(np.arange(4), 25)
    a = stratified_split(labels, 0.2, seed=1)
    b = stratified_split(labels, 0.2, seed=1)
    c = stratified_split(labels, 0.2, seed=2)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[1], c[1])


def test_class_with_one_sample_falls_back_to_a_plain_split():
    labels = np.array([0] * 10 + [1])
    keep, held = stratified_split(labels, 0.3, seed=0)
    assert len(held) == 4 and len(keep) == 7


def test_bad_fraction_is_refused():
    with pytest.raises(ConvlabError, match="between 0 and 1"):
        stratified_split(np.zeros(10, dtype=int), 1.0, seed=0)
