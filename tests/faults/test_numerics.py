"""A NaN or Inf training loss stops the run at once, names epoch and step, and keeps the last good checkpoint."""
from __future__ import annotations

import math

import pytest
import torch

import convlab
from convlab.cli import main
from convlab.training.checkpoint import CHECKPOINTS, LAST, load_checkpoint
from convlab.training.numerics import NonFiniteLoss


class _LossTurningBadAt(torch.nn.CrossEntropyLoss):
    """Cross-entropy that returns `value` at training step `bad_step` (validation calls are not counted)."""

    bad_step, value = 30, math.nan

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = 0

    def forward(self, logits, labels):
        loss = super().forward(logits, labels)
        if torch.is_grad_enabled():
            self.steps += 1
            if self.steps == self.bad_step:
                return loss * self.value
        return loss


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_bad_loss_in_epoch_2_names_epoch_and_step_and_keeps_epoch_1(tmp_path, monkeypatch, value):
    monkeypatch.setattr(_LossTurningBadAt, "value", value)
    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", _LossTurningBadAt)
    out = tmp_path / "run"
    # 1293 training images / 64 = 21 steps per epoch: step 30 is batch 9 of epoch 2.
    with pytest.raises(NonFiniteLoss) as err:
        convlab.train(data="digits", model="tiny-cnn", epochs=3, batch_size=64, lr=0.01, out=str(out), quiet=True)
    message = str(err.value)
    assert "at epoch 2, step 30 (batch 9 of 21)" in message
    assert f"last good checkpoint (end of epoch 1) is kept in {out / CHECKPOINTS}" in message
    assert "--lr 0.001" in message
    saved = load_checkpoint(out / CHECKPOINTS / LAST)
    assert saved["epoch"] == 1 and saved["batch"] == 0
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert not (out / "model.safetensors").exists()


def test_diverging_lr_exits_2_with_a_hint(tmp_path, capsys):
    code = main(["train", "--data", "digits", "--model", "tiny-cnn", "--epochs", "2", "--optimizer", "sgd",
                 "--lr", "1e12", "--schedule", "none", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "the loss became NaN or infinite at epoch 1, step" in err
    assert "--lr 1e+11" in err and "Traceback" not in err
