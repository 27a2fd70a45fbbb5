"""Reading a run's test split: only that split is converted to the model's input, with the same values as before."""
import numpy as np
import pytest

from convlab.config import Config
from convlab.data import run_data


@pytest.mark.parametrize("data", ["folder", "digits"])
def test_reading_the_test_split_converts_only_the_test_images(tmp_path, make_image_folder, monkeypatch, data):
    conf = Config()
    if data == "folder":  # gray images given to a 3-channel model at another size: both conversions
        conf.data.name = f"imagefolder:{make_image_folder(tmp_path / 'imgs', per_class=10, mode='L')}"
    else:
        conf.data.name = "digits"
    size, channels = (16, 16), 3
    full = run_data.load_run_data(conf, channels, size, "the run")
    before = run_data.test_split(full, full.classes)  # the values read through the whole run's data

    converted = []
    conform = run_data.conform_arrays

    def counting(arrays, *args):
        converted.append(len(arrays))
        return conform(arrays, *args)

    monkeypatch.setattr(run_data, "conform_arrays", counting)
    test = run_data.load_test_data(conf, full.classes, channels, size, who="the run")
    assert converted == [len(full.test)]  # not the training rows too
    assert test.images.shape == (len(full.test), 3, 16, 16)
    np.testing.assert_array_equal(test.images, before.images)
    np.testing.assert_array_equal(test.labels, before.labels)
