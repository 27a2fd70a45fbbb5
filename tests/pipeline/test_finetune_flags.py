"""`convlab finetune` goes through the one pipeline: every train flag it accepts is honoured, or refused by name."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import convlab
from convlab.cli import main
from convlab.training.callbacks import Callback
from convlab.training.numerics import NonFiniteLoss

SRC = Path(__file__).resolve().parents[2] / "src"
FEW = dict(data="digits", classes="5,6,7,8,9", train_per_class=30, epochs=2, batch_size=16, quiet=True)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A small-cnn digits run to fine-tune from (a preset: the scratch engine can fine-tune it too)."""
    out = tmp_path_factory.mktemp("source") / "src"
    return convlab.train(data="digits", model="small-cnn", epochs=2, out=str(out), quiet=True)


class Threads(Callback):
    """Records torch's thread count while training runs."""

    def __init__(self):
        self.seen = []

    def on_epoch_begin(self, state):
        self.seen.append(torch.get_num_threads())


def test_deterministic_twice_gives_bit_identical_weights(source_run, tmp_path):
    runs = [convlab.finetune(source_run.path, deterministic=True, seed=3, out=str(tmp_path / f"d{i}"), **FEW)
            for i in range(2)]
    first, second = (load_file(str(run.path / "model.safetensors")) for run in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert runs[0].config.train.deterministic is True


def test_threads_is_applied(source_run, tmp_path):
    before = torch.get_num_threads()
    record = Threads()
    try:
        convlab.finetune(source_run.path, threads=1, out=str(tmp_path / "t"), callbacks=[record], **FEW)
        assert record.seen == [1, 1]
    finally:
        torch.set_num_threads(before)


def test_tensorboard_writes_logs(source_run, tmp_path):
    pytest.importorskip("tensorboard")
    run = convlab.finetune(source_run.path, tensorboard=True, out=str(tmp_path / "tb"), **FEW)
    events = list((run.path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


class _LossTurningNaNAt(torch.nn.CrossEntropyLoss):
    steps = 0

    def forward(self, logits, labels):
        loss = super().forward(logits, labels)
        if torch.is_grad_enabled():
            type(self).steps += 1
            if type(self).steps == 3:
                return loss * math.nan
        return loss


def test_a_nan_loss_stops_a_finetune_with_trains_message(source_run, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", _LossTurningNaNAt)
    _LossTurningNaNAt.steps = 0
    with pytest.raises(NonFiniteLoss) as err:
        convlab.finetune(source_run.path, lr=0.01, out=str(tmp_path / "nan"), **FEW)
    assert "training stopped: the loss became NaN or infinite at epoch 1, step 3" in str(err.value)
    assert "--lr 0.001" in str(err.value)
    assert not (tmp_path / "nan").exists()  # it stopped in its first epoch: nothing worth keeping


def test_scratch_engine_fine_tunes_with_strategy_full(source_run, tmp_path):
    run = convlab.finetune(source_run.path, engine="scratch", strategy="full", out=str(tmp_path / "s"), **FEW)
    assert run.config.train.engine == "scratch" and run.metrics["accuracy"] > 0.5
    assert (run.path / "model.safetensors").is_file()


def test_scratch_engine_refuses_what_it_cannot_do_by_name(source_run, tmp_path, capsys):
    code = main(["finetune", "--from", str(source_run.path), "--engine", "scratch", "--data", "digits",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--engine scratch fine-tunes with --strategy full only" in err
    assert "--strategy two-stage" in err and not (tmp_path / "x").exists()
    code = main(["finetune", "--from", "torchvision:resnet18", "--weights", str(tmp_path / "none.pt"), "--engine",
                 "scratch", "--strategy", "full", "--data", "digits", "--out", str(tmp_path / "y")])
    assert code == 2  # the weights file is missing: refused before anything else runs


@pytest.mark.slow
def test_channels_last_is_honoured_and_recorded_and_load_run_follows_it(source_run, tmp_path):
    for setting, expected in (("off", "contiguous"), ("on", "channels_last")):
        run = convlab.finetune(source_run.path, channels_last=setting, out=str(tmp_path / setting), **FEW)
        recorded = json.loads((run.path / "preprocess.json").read_text())["memory_format"]
        assert recorded == expected
        model = convlab.load_run(run.path).model
        conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight  # 32x16x3x3
        assert conv.is_contiguous(memory_format=torch.channels_last) == (expected == "channels_last")
        assert conv.is_contiguous() == (expected == "contiguous")


@pytest.mark.slow
def test_strict_and_loader_reach_the_data(tmp_path, make_image_folder, capsys):
    root = make_image_folder(tmp_path / "photos", per_class=6, size=(16, 16))
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    source = convlab.train(data=f"imagefolder:{root}", model="tiny-cnn", image_size=16, epochs=1,
                           out=str(tmp_path / "src"), quiet=True)
    code = main(["finetune", "--from", str(source.path), "--data", f"imagefolder:{root}", "--strict",
                 "--epochs", "2", "--out", str(tmp_path / "strict")])
    assert code == 2 and "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()
    streamed = convlab.finetune(source.path, data=f"imagefolder:{root}", loader="streaming", epochs=2,
                                out=str(tmp_path / "streamed"), quiet=True)
    memory = convlab.finetune(source.path, data=f"imagefolder:{root}", loader="memory", epochs=2,
                              out=str(tmp_path / "memory"), quiet=True)
    assert json.loads((streamed.path / "data_issues.json").read_text())["skipped"] == 1
    assert streamed.metrics["accuracy"] == memory.metrics["accuracy"]


@pytest.mark.slow
def test_few_shot_onecycle_finetune_with_four_steps(source_run, tmp_path, capsys):
    """The docs' few-shot case: 10 images per class, no validation, 4 epochs of one step each."""
    code = main(["finetune", "--from", str(source_run.path), "--train-per-class", "10", "--val-fraction", "0",
                 "--epochs", "4", "--batch-size", "128", "--schedule", "onecycle", "--out", str(tmp_path / "few"),
                 "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "few" / "metrics.json").read_text())["epochs_run"] == 4


@pytest.mark.slow
def test_torchrun_two_gloo_processes_finetune(source_run, tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "convlab", "finetune", "--from", str(source_run.path), "--data", "digits",
                           "--epochs", "3", "--threads", "1", "--quiet", "--out", str(tmp_path / "ddp")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed: 2 processes" in done.stdout and done.stdout.count("run folder:") == 1
    assert "epoch 2: stage 2/2 trains stem, stage1, stage2, head" in done.stdout
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["accuracy"] > 0.8
