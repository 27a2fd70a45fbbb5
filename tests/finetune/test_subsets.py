"""--classes and --train-per-class: seeded, stratified subsets for transfer and few-shot studies."""
import numpy as np
import pytest

from convlab.data.arrays import ImageArrays, Splits
from convlab.data.subsets import keep_classes, per_class, select_subset
from convlab.errors import ConvlabError


def _splits():
    labels = np.repeat(np.arange(4), 10)
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1)
    return Splits("toy", ImageArrays(images, labels), ImageArrays(images[::2], labels[::2]), ["a", "b", "c", "d"])


def test_per_class_keeps_n_of_each_class_and_the_seed_decides_which():
    train = _splits().train
    kept = per_class(train, 3, seed=1)
    assert np.bincount(kept.labels).tolist() == [3, 3, 3, 3]
    assert per_class(train, 3, seed=1).images.tolist() == kept.images.tolist()
    assert per_class(train, 3, seed=2).images.tolist() != kept.images.tolist()
    assert len(per_class(train, 50, seed=0)) == 40  # classes with fewer keep all theirs


def test_keep_classes_renumbers_in_the_given_order():
    splits = keep_classes(_splits(), ["d", "b"])
    assert splits.classes == ["d", "b"]
    assert sorted(set(splits.train.labels.tolist())) == [0, 1]
    assert splits.train.images[splits.train.labels == 0].min() == 30  # d's images
    with pytest.raises(ConvlabError, match="--classes d,z: toy has no class 'z'"):
        keep_classes(_splits(), ["d", "z"])


def test_select_subset_trims_only_the_training_split():
    splits = select_subset(_splits(), "a,b,c", 2, seed=0)
    assert len(splits.train) == 6 and len(splits.test) == 15


def test_train_takes_train_per_class(tmp_path):
    from convlab import train

    run = train(data="digits", model="tiny-cnn", epochs=1, train_per_class=5, val_fraction=0.2,
                out=str(tmp_path / "r"), quiet=True)
    assert run.config.data.train_per_class == 5 and run.metrics["num_samples"] == 360
