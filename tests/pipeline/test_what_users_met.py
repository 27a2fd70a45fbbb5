"""What a new user met following the docs, and the smaller defects found by reading: each one, as a test."""
from __future__ import annotations

import io
import json
import os
import signal
import stat

import numpy as np
import pytest
import torch
from rich.console import Console

import convlab
from convlab.data.run_data import load_run_data
from convlab import pipeline
from convlab.cli import main
from convlab.data.batches import Normalization
from convlab.training.callbacks import Callback
from convlab.training.checkpoint import TrainingInterrupted
from convlab.training.distributed import Distributed


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mnist-cnn", "small-cnn", "lenet", "resnet8"])
def test_prune_works_on_every_preset_run(model, tmp_path, capsys):
    """A loaded run is channels_last; pruning flattens weights, so it must bring them to contiguous first."""
    size = ["--image-size", "16"] if model in ("mnist-cnn", "lenet") else []
    assert main(["train", "--data", "digits", "--model", model, *size, "--epochs", "1", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 0
    code = main(["compress", "prune", str(tmp_path / "run"), "--amount", "0.7", "--out", str(tmp_path / "pruned")])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "pruned" / "metrics.json").read_text())
    assert metrics["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert convlab.load_run(tmp_path / "pruned").evaluate()["accuracy"] == pytest.approx(metrics["accuracy"])


@pytest.mark.slow
def test_pruned_weights_stay_zero_through_fine_tuning(digits_run, tmp_path):
    from convlab.compress import prune_run

    pruned = prune_run(digits_run.path, tmp_path / "p", amount=0.6, finetune_epochs=2, quiet=True,
                       latency_seconds=0.01)
    weights = [m.weight for m in pruned.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=0.005) and pruned.metrics["finetune"]["epochs"] == 2
    assert not (tmp_path / "p" / "checkpoints").exists()  # the fine-tune's training state is not kept


def test_a_failed_compress_command_leaves_no_folder(digits_run, tmp_path, monkeypatch, capsys):
    from convlab.compress import prune as prune_module
    from convlab.errors import ConvlabError

    def fail(*args, **kwargs):
        raise ConvlabError("the disk is full (simulated)")

    monkeypatch.setattr(prune_module, "cost_metrics", fail)
    out = tmp_path / "pruned"
    assert main(["compress", "prune", str(digits_run.path), "--out", str(out)]) == 2
    assert "the disk is full (simulated)" in capsys.readouterr().err
    assert not out.exists()
    assert main(["compare", str(digits_run.path), "--chart", str(tmp_path / "c.png"), "--seconds", "0.01"]) == 0


def test_a_train_that_fails_before_any_epoch_leaves_no_folder(tmp_path):
    class Broken(Callback):
        def on_train_begin(self, state):
            raise RuntimeError("broken callback")

    with pytest.raises(RuntimeError):
        convlab.train(data="digits", model="tiny-cnn", epochs=1, out=str(tmp_path / "run"), quiet=True,
                      callbacks=[Broken()])
    assert not (tmp_path / "run").exists()


class _CtrlCAt(Callback):
    """Sends this process a SIGINT at one batch, as Ctrl-C would."""

    def on_batch_end(self, state, logs):
        if logs["batch"] == 2:
            signal.raise_signal(signal.SIGINT)


def test_ctrl_c_on_a_scratch_run_does_not_suggest_a_refused_resume(tmp_path):
    with pytest.raises(TrainingInterrupted) as err:
        convlab.train(data="digits", model="tiny-cnn", engine="scratch", epochs=2, out=str(tmp_path / "run"),
                      quiet=True, callbacks=[_CtrlCAt()])
    message = str(err.value)
    assert "the scratch engine cannot resume" in message and "--resume" not in message
    code = main(["train", "--resume", str(tmp_path / "run")])
    assert code == 2  # what the message no longer suggests is indeed refused


def test_ctrl_c_on_a_torch_run_suggests_the_resume_that_works(tmp_path):
    with pytest.raises(TrainingInterrupted) as err:
        convlab.train(data="digits", model="tiny-cnn", epochs=2, out=str(tmp_path / "run"), quiet=True,
                      callbacks=[_CtrlCAt()])
    assert f"continue with: convlab train --resume {tmp_path / 'run'}" in str(err.value)
    assert convlab.train(resume=tmp_path / "run", quiet=True).metrics["epochs_run"] == 2


def test_every_file_of_a_run_and_a_variant_has_the_usual_mode(digits_run, tmp_path):
    from convlab.compress import quantize_run

    previous = os.umask(0o022)
    try:
        run = convlab.train(data="digits", model="tiny-cnn", epochs=1, out=str(tmp_path / "run"), quiet=True)
        quantize_run(run.path, tmp_path / "int8", latency_seconds=0.01)
    finally:
        os.umask(previous)
    for folder in (tmp_path / "run", tmp_path / "int8"):
        files = [p for p in folder.rglob("*") if p.is_file()]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        assert set(modes.values()) == {0o644}, modes
    assert "model.safetensors" in {p.name for p in (tmp_path / "run").iterdir()}


@pytest.mark.slow
def test_the_stage_line_agrees_with_the_table_under_freeze(tmp_path):
    source = convlab.train(data="digits", model="small-cnn", epochs=1, out=str(tmp_path / "src"), quiet=True)
    buffer = io.StringIO()
    convlab.finetune(source.path, data="digits", freeze="stages:1", strategy="two-stage", epochs=2,
                     out=str(tmp_path / "ft"), quiet=True, console=Console(file=buffer, width=200))
    lines = buffer.getvalue().splitlines()
    stage2 = next(line for line in lines if line.strip().startswith("stage 2/2"))
    assert stage2.endswith("trains stage2, head"), stage2  # stem and stage1 are held by --freeze
    assert any(line.split()[0] == "stem" and "frozen (--freeze)" in line for line in lines if line.strip())


def test_notes_of_the_data_are_printed(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "photos", per_class=6)
    buffer = io.StringIO()
    convlab.train(data=f"imagefolder:{root}", model="tiny-cnn", epochs=1, train_per_class=4, image_size=12,
                  out=str(tmp_path / "run"), quiet=True, console=Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "note: imagefolder: no test/ or val/ folder in" in text
    assert "note: --train-per-class 4: 12 labelled training images" in text


@pytest.mark.slow
def test_normalization_comes_from_the_training_rows_with_either_loader(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "photos", per_class=10)
    runs = {loader: convlab.train(data=f"imagefolder:{root}", model="tiny-cnn", epochs=1, image_size=12,
                                  loader=loader, val_fraction=0.3, out=str(tmp_path / loader), quiet=True)
            for loader in ("memory", "streaming")}
    assert isinstance(load_run_data(runs["streaming"].config).splits.train.images, np.memmap)
    memory, streamed = (runs[k].preprocess for k in ("memory", "streaming"))
    assert streamed.mean == pytest.approx(memory.mean, abs=1e-12)
    assert streamed.std == pytest.approx(memory.std, abs=1e-12)
    data = load_run_data(runs["memory"].config)  # ... and they are the training rows' statistics
    rows_only = Normalization.of(data.splits.train.images[data.train_rows])
    all_rows = Normalization.of(data.splits.train.images)
    assert memory.mean == pytest.approx(rows_only.mean) and memory.mean != pytest.approx(all_rows.mean)


def test_a_rank_other_than_0_closes_its_silent_console(tmp_path, monkeypatch):
    opened = []
    real_open = open

    def tracking_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        opened.append(handle)
        return handle

    monkeypatch.setattr(pipeline.distributed, "setup", lambda device, timeout_s=300: (Distributed(rank=1, world_size=1), device))
    monkeypatch.setattr(pipeline, "open", tracking_open, raising=False)
    run = convlab.train(data="digits", model="tiny-cnn", epochs=1, out=str(tmp_path / "run"), quiet=True)
    assert [h.name for h in opened] == [os.devnull] and all(h.closed for h in opened)
    assert not (tmp_path / "run").exists() and run.metrics is None  # rank 1 writes no run folder


def test_a_setting_a_command_cannot_honour_is_refused_by_name(digits_run, tmp_path, capsys):
    code = main(["distill", "--teacher", str(digits_run.path), "--student", "tiny-cnn", "--engine", "scratch",
                 "--epochs", "1", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "convlab distill: error: --engine scratch: convlab distill needs the torch engine" in err
    assert "use --engine torch" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()
