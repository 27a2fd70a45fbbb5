"""The digits read without importing sklearn are sklearn's load_digits, value for value."""
import numpy as np

from convlab.data.digits import read_digits


def test_the_digits_are_sklearns_load_digits():
    from sklearn.datasets import load_digits

    pixels, labels = read_digits()
    bunch = load_digits()
    assert pixels.shape == (1797, 8, 8) and labels.dtype == np.int64
    np.testing.assert_array_equal(pixels, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
