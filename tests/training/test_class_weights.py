"""Imbalanced folders: the per-class counts and the warning on the data line, --class-weights auto against a loss
computed by hand, and the tasks that refuse the imbalance options."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlab import config as cfg
from convlab.data.arrays import ImageArrays, Splits
from convlab.data.balance import balanced_class_weights, counts_line
from convlab.data.run_data import RunData
from convlab.errors import ConvlabError
from convlab.tasks import find_task
from cli_output import assert_one_line_error, run_cli

CLASSES = ["cat", "dog", "fox"]


def run_data(counts: list[int], val_rows: int = 0, classes=CLASSES) -> RunData:
    """Training rows with `counts` images per class (in class order), then `val_rows` more rows of class 0 held
    out for validation: the counts of the training rows must leave those out."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)] + [np.zeros(val_rows, dtype=np.int64)])
    images = np.zeros((len(labels), 1, 4, 4), dtype=np.uint8)
    train = ImageArrays(images, labels)
    splits = Splits("toy", train, ImageArrays(images[:3], labels[:3]), list(classes))
    n_train = sum(counts)
    held = np.arange(n_train, n_train + val_rows) if val_rows else None
    return RunData(splits, np.arange(n_train), held, data_channels=1)


def config(**flags) -> cfg.Config:
    conf = cfg.Config()
    optim = {k: v for k, v in flags.items() if k in {"class_weights", "label_smoothing"}}
    data = {k: v for k, v in flags.items() if k == "sampler"}
    return dataclasses.replace(conf, optim=dataclasses.replace(conf.optim, **optim),
                               data=dataclasses.replace(conf.data, **data))


def data_line(data: RunData, **flags) -> str:
    start = SimpleNamespace(norm=None, normalization_from=None)
    return find_task("classify").data_line(data, config(**flags), nn.Linear(2, 2), start, "cpu")


# --- the data line ----------------------------------------------------------------------------------------------

def test_the_data_line_counts_the_training_rows_of_each_class():
    lines = data_line(run_data([120, 12, 30], val_rows=50)).splitlines()
    assert lines[0].startswith("data toy: 162 train / 50 val / 3 test images")
    assert lines[1] == "per class: cat 120, dog 12, fox 30"  # the 50 validation rows of cat are not counted
    assert lines[2] == ("warning: imbalanced training split: the largest class (cat, 120) has 10.0x the images of "
                        "the smallest (dog, 12); consider --class-weights auto or --sampler balanced")


def test_no_warning_under_ten_to_one_or_when_a_remedy_is_on():
    assert len(data_line(run_data([119, 12, 30])).splitlines()) == 2  # 9.9x
    for flags in ({"class_weights": "auto"}, {"sampler": "balanced"}):
        assert "warning" not in data_line(run_data([120, 12, 30]), **flags)


def test_many_classes_show_the_range_and_the_extremes():
    names = [f"c{i}" for i in range(20)]
    counts = np.array([50 + i for i in range(20)])
    assert counts_line(counts, names) == ("per class: 50 to 69 images over 20 classes (fewest: c0 50, c1 51, c2 52; "
                                          "most: c19 69, c18 68, c17 67)")


# --- --class-weights auto ---------------------------------------------------------------------------------------

def test_the_weights_are_sklearns_balanced_weights():
    labels = np.array([0] * 30 + [1] * 10 + [2] * 5)
    weights = balanced_class_weights(labels, CLASSES)
    # n / (k * n_c): 45 / 90, 45 / 30, 45 / 15
    np.testing.assert_allclose(weights, [0.5, 1.5, 3.0])
    assert weights[labels].mean() == pytest.approx(1.0)  # averaged over the training images


def hand_loss(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray, smoothing: float) -> float:
    """torch's weighted, label-smoothed cross-entropy written out in float64: per image
    (1 - e) w_y (-log p_y) + e / K sum_c w_c (-log p_c), summed and divided by the sum of w_y."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    k = logits.shape[1]
    per_image = ((1 - smoothing) * weights[labels] * -log_p[rows, labels]
                 + smoothing / k * (weights * -log_p).sum(axis=1))
    return float(per_image.sum() / weights[labels].sum())


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_weighted_loss_of_a_batch_equals_the_hand_computation(smoothing):
    data = run_data([60, 6, 20], val_rows=10)
    weights = 86 / (3 * np.array([60.0, 6.0, 20.0]))  # the training rows only: 10 validation rows left out
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 3)) * 2
    labels = np.array([0, 1, 2, 1, 0, 0, 2, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    task = find_task("classify")

    weighted = task.loss(config(class_weights="auto", label_smoothing=smoothing), data, torch.device("cpu"))
    got = float(weighted(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)))
    assert got == pytest.approx(hand_loss(logits, labels, weights, smoothing), rel=1e-5)

    plain = task.loss(config(label_smoothing=smoothing), data, torch.device("cpu"))
    unweighted = float(plain(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)))
    assert unweighted == pytest.approx(hand_loss(logits, labels, np.ones(3), smoothing), rel=1e-5)
    assert abs(got - unweighted) > 0.05  # the weights changed the loss


def test_a_class_without_training_images_is_named():
    with pytest.raises(ConvlabError, match="--class-weights auto: class dog has no training images"):
        find_task("classify").loss(config(class_weights="auto"), run_data([5, 0, 5]), torch.device("cpu"))


def test_an_imbalanced_folder_trains_with_both_options(tmp_path, capsys):
    """The warning on a real 10:1 folder, gone with --class-weights auto and --sampler balanced; the run trains."""
    rng = np.random.default_rng(0)
    for name, count, colour in (("many", 40, (220, 30, 30)), ("few", 4, (30, 40, 210))):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / name / f"{i}.png")
    common = ["train", "--data", f"imagefolder:{tmp_path / 'imgs'}", "--model", "tiny-cnn", "--image-size", "8",
              "--epochs", "1", "--batch-size", "8", "--val-fraction", "0", "--threads", "1", "--quiet"]
    code, out, _ = run_cli(capsys, *common, "--out", str(tmp_path / "plain"))
    assert code == 0
    # a stratified 20% of the 44 images is the test split: 32 and 3 train
    assert "per class: few 3, many 32\nwarning: imbalanced training split: the largest class (many, 32) has 10.7x " \
           "the images of the smallest (few, 3)" in out
    code, out, _ = run_cli(capsys, *common, "--class-weights", "auto", "--sampler", "balanced",
                           "--out", str(tmp_path / "balanced"))
    assert code == 0, out
    assert "warning: imbalanced" not in out and "balanced accuracy" in out


# --- the tasks that refuse them ---------------------------------------------------------------------------------

@pytest.mark.parametrize("data, task", [("shapes", "detect"), ("shape-masks", "segment"),
                                        ("shape-instances", "instance")])
@pytest.mark.parametrize("flags", [["--class-weights", "auto"], ["--sampler", "balanced"]])
def test_detection_segmentation_and_instance_runs_refuse_the_imbalance_options(tmp_path, capsys, data, task,
                                                                                flags):
    code, _, err = run_cli(capsys, "train", "--data", data, "--out", str(tmp_path / "run"), *flags)
    assert_one_line_error(code, err, f"{' '.join(flags)} is not available for {task} runs")
    assert not (tmp_path / "run").exists()


def test_distillation_refuses_class_weights_it_would_ignore(digits_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "distill", "--teacher", str(digits_run.path), "--student", "tiny-cnn",
                           "--class-weights", "auto", "--out", str(tmp_path / "student"))
    assert_one_line_error(code, err, "--class-weights auto: convlab distill trains with its own loss")
    assert not (tmp_path / "student").exists()


def test_a_resumed_run_with_both_options_is_bit_identical(tmp_path):
    """The balanced draws come from the checkpointed generator and the weights from the same training rows."""
    from safetensors.torch import load_file

    from convlab.pipeline import train

    common = dict(data="digits", model="tiny-cnn", batch_size=64, schedule="none", sampler="balanced",
                  class_weights="auto", deterministic=True, threads=1, quiet=True)
    whole = train(epochs=2, out=str(tmp_path / "whole"), **common)
    train(epochs=1, out=str(tmp_path / "part"), **common)
    resumed = train(resume=str(tmp_path / "part"), epochs=2, quiet=True)
    a, b = (load_file(str(run.path / "model.safetensors")) for run in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
