"""`convlab train --engine scratch`: the run folder, weights that move between the engines, clear refusals."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from convlab import load_run, train
from convlab.cli import main
from convlab.data.registry import load_dataset
from convlab.errors import ConvlabError
from convlab.models.registry import create_model
from convlab.models.to_scratch import to_scratch


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits-scratch"
    return train(data="digits", model="small-cnn", engine="scratch", epochs=2, out=str(out), quiet=True)


def test_a_scratch_run_writes_the_usual_run_folder_and_learns(scratch_run):
    names = {p.name for p in scratch_run.path.iterdir()}
    assert {"config.yaml", "model.safetensors", "labels.json", "preprocess.json", "metrics.csv", "metrics.json",
            "curves.png", "confusion_matrix.png"} <= names
    assert "engine: scratch" in (scratch_run.path / "config.yaml").read_text()
    assert scratch_run.metrics["accuracy"] > 0.8
    rows = list(csv.DictReader(open(scratch_run.path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])


def _normalized_test_images(run):
    splits = load_dataset("digits", None, None)
    images = splits.test.images[:64].astype(np.float32) / 255.0
    mean = np.array(run.preprocess.mean, dtype=np.float32)[None, :, None, None]
    std = np.array(run.preprocess.std, dtype=np.float32)[None, :, None, None]
    return (images - mean) / std


def test_a_scratch_run_loads_in_the_torch_engine_with_the_same_logits(scratch_run):
    weights = load_file(str(scratch_run.path / "model.safetensors"))
    torch_model = load_run(scratch_run.path).model
    assert list(weights) == sorted(torch_model.state_dict())  # safetensors sorts keys; the names are torch's
    twin = to_scratch(create_model("small-cnn", 1, 10, (8, 8)))
    twin.load_state_dict(weights)  # the file read straight into the scratch engine
    x = _normalized_test_images(scratch_run)
    scratch_logits = twin.eval()(x)
    with torch.no_grad():
        torch_logits = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(scratch_logits, torch_logits, atol=1e-4, rtol=0)


def test_a_torch_run_loads_in_the_scratch_engine_with_the_same_logits(digits_run):
    run = load_run(digits_run.path)
    x = _normalized_test_images(run)
    with torch.no_grad():
        torch_logits = run.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run.scratch_model()(x), torch_logits, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_the_schedule_drives_the_scratch_optimizer_as_in_torch(tmp_path):
    common = dict(data="digits", model="tiny-cnn", epochs=2, optimizer="sgd", lr=0.05, schedule="onecycle",
                  quiet=True)
    runs = [train(engine=engine, out=str(tmp_path / engine), **common) for engine in ("torch", "scratch")]
    lrs = [[float(r["lr"]) for r in csv.DictReader(open(run.path / "metrics.csv"))] for run in runs]
    assert lrs[0] == pytest.approx(lrs[1])
    assert runs[1].metrics["accuracy"] > 0.7


@pytest.mark.parametrize("name", [pytest.param("mnist-cnn", marks=pytest.mark.slow), "lenet",
                                  pytest.param("resnet8", marks=pytest.mark.slow)])
def test_every_preset_trains_in_the_scratch_engine(tmp_path, name):
    dropout = 0.1 if name == "lenet" else 0.0
    run = train(data="digits", model=name, engine="scratch", epochs=3, out=str(tmp_path / "r"), quiet=True,
                batch_size=128, dropout=dropout)
    expected = create_model(name, 1, 10, 8, dropout).state_dict()
    assert set(load_file(str(run.path / "model.safetensors"))) == set(expected)
    assert run.metrics["accuracy"] > 0.3  # three short epochs: clearly better than chance (0.1)


@pytest.mark.parametrize("option, value, fragment", [
    ("model", "resnet18", "--model resnet18"),
    ("device", "cuda", "--device cuda"),
])
def test_unsupported_options_are_refused_by_name(tmp_path, option, value, fragment):
    with pytest.raises(ConvlabError, match=fragment):
        train(data="digits", engine="scratch", out=str(tmp_path / "r"), **{option: value})


def test_the_cli_refuses_in_one_line(capsys, tmp_path):
    code = main(["train", "--engine", "scratch", "--model", "resnet18", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--model resnet18" in err and "--engine torch" in err


def test_layers_the_engine_has_no_twin_for_are_named():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.GELU())
    with pytest.raises(ConvlabError, match=r"model\.1 \(GELU"):
        to_scratch(model)


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")  # the divergence
def test_the_nan_guard_stops_a_diverging_scratch_run(tmp_path):
    from convlab.training.numerics import NonFiniteLoss

    with pytest.raises(NonFiniteLoss, match="NaN or infinite"):
        train(data="digits", model="tiny-cnn", engine="scratch", optimizer="sgd", lr=1e12, momentum=0.0,
              schedule="none", epochs=1, out=str(tmp_path / "r"), quiet=True)


def test_resuming_a_scratch_run_is_refused_by_name(tmp_path):
    run = train(data="digits", model="tiny-cnn", engine="scratch", schedule="none", epochs=1,
                out=str(tmp_path / "r"), quiet=True)
    with pytest.raises(ConvlabError, match="--resume.*--engine scratch"):
        train(resume=str(run.path), epochs=2)
