"""The run folder: its files, and train -> load -> identical predictions."""
import json

import numpy as np
import torch
import pytest
import yaml
from PIL import Image

from convlab import load_run
from convlab.errors import ConvlabError

FILES = ["config.yaml", "model.safetensors", "labels.json", "preprocess.json", "metrics.csv", "metrics.json",
         "curves.png", "confusion_matrix.png"]


def test_run_folder_has_every_file(digits_run):
    for name in FILES:
        assert (digits_run.path / name).is_file(), name
    metrics = json.loads((digits_run.path / "metrics.json").read_text())
    for key in ("accuracy", "top5_accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class",
                "confusion_matrix", "train_seconds", "test_seconds"):
        assert key in metrics
    assert set(metrics["per_class"]["3"]) == {"precision", "recall", "f1", "support"}
    assert np.asarray(metrics["confusion_matrix"]).sum() == 360
    assert json.loads((digits_run.path / "labels.json").read_text()) == [str(d) for d in range(10)]
    pre = json.loads((digits_run.path / "preprocess.json").read_text())
    assert pre["size"] == [8, 8] and pre["channels"] == 1 and len(pre["mean"]) == 1
    config = yaml.safe_load((digits_run.path / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny-cnn" and config["train"]["epochs"] == 3
    assert not list(digits_run.path.glob("*.pt")) and not list(digits_run.path.glob("*.pkl"))


def test_loaded_run_predicts_identically(digits_run):
    from convlab.data import load_dataset

    test = load_dataset("digits").test
    loaded = load_run(digits_run.path)
    np.testing.assert_array_equal(digits_run.predict_arrays(test.images), loaded.predict_arrays(test.images))
    assert loaded.evaluate()["accuracy"] == digits_run.metrics["accuracy"]


def test_predict_from_image_files(digits_run, tmp_path):
    from convlab.data import load_dataset

    test = load_dataset("digits").test
    for i in range(4):
        Image.fromarray(test.images[i, 0]).save(tmp_path / f"digit{i}.png")
    results = load_run(digits_run.path).predict([tmp_path], top_k=3)
    assert [r["path"] for r in results] == [str(tmp_path / f"digit{i}.png") for i in range(4)]
    expected = digits_run.predict_arrays(test.images[:4])
    for result, probs in zip(results, expected):
        assert len(result["top"]) == 3
        assert result["top"][0]["label"] == str(int(probs.argmax()))
        assert result["top"][0]["prob"] == pytest.approx(probs.max(), abs=1e-6)
        assert result["top"][0]["prob"] >= result["top"][1]["prob"] >= result["top"][2]["prob"]


def test_predict_accepts_arrays_of_other_sizes(digits_run):
    big = np.kron(np.eye(8, dtype=np.uint8) * 255, np.ones((4, 4), np.uint8))  # a 32x32 image
    result = digits_run.predict(big)
    assert result[0]["path"] is None and len(result[0]["top"]) == 5
    assert sum(t["prob"] for t in result[0]["top"]) <= 1.0 + 1e-6


def test_run_without_weights_is_refused(digits_run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.yaml", "labels.json", "preprocess.json"):
        (broken / name).write_bytes((digits_run.path / name).read_bytes())
    with pytest.raises(ConvlabError, match="has no model.safetensors"):
        load_run(broken)


def test_out_folder_with_a_run_is_not_overwritten(digits_run_copy):
    from convlab import train

    before = (digits_run_copy.path / "model.safetensors").read_bytes()
    with pytest.raises(ConvlabError, match="already holds a run"):
        train(data="digits", model="tiny-cnn", epochs=1, out=str(digits_run_copy.path), quiet=True)
    assert (digits_run_copy.path / "model.safetensors").read_bytes() == before


def test_prediction_switches_a_training_model_to_eval_once(digits_run_copy):
    """On a copy: the test puts the model in training mode, which the shared run must never be left in."""
    from convlab.data import load_dataset
    from convlab.run import _is_on

    run = digits_run_copy
    assert _is_on(run.model, torch.device("cpu")) and not _is_on(run.model, torch.device("meta"))
    images = load_dataset("digits").test.images[:16]
    expected = run.predict_arrays(images)
    run.model.train()  # dropout/batch-norm in training mode would change the outputs
    np.testing.assert_array_equal(run.predict_arrays(images), expected)
    assert not run.model.training


def test_prediction_switches_a_training_submodule_to_eval_too(digits_run_copy):
    from convlab.data import load_dataset

    run = digits_run_copy
    images = load_dataset("digits").test.images[:16]
    expected = run.predict_arrays(images)
    run.model.eval()
    run.model.features.train()  # the top module says eval, a child still trains
    np.testing.assert_array_equal(run.predict_arrays(images), expected)
    assert not any(m.training for m in run.model.modules())
