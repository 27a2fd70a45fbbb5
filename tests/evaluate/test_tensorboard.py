"""--tensorboard: scalars and the validation confusion matrix in RUN_DIR/tensorboard, or a clear error."""
from __future__ import annotations

import sys

import pytest

from convlab import train
from convlab.cli import main


@pytest.mark.slow
def test_train_logs_scalars_and_the_confusion_matrix(tmp_path):
    pytest.importorskip("tensorboard", reason="--tensorboard needs tensorboard (pip install -e '.[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(data="digits", model="tiny-cnn", epochs=2, out=str(tmp_path / "run"), quiet=True, tensorboard=True)
    events = EventAccumulator(str(run.path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("accuracy/val")] == [1, 2]
    history = (run.path / "metrics.csv").read_text().splitlines()
    last_val_acc = float(history[-1].split(",")[4])
    assert events.Scalars("accuracy/val")[-1].value == pytest.approx(last_val_acc, rel=1e-6)
    assert "confusion_matrix/val" in tags["images"]
    assert len(events.Images("confusion_matrix/val")) == 2


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails as if not installed
    code = main(["train", "--model", "tiny-cnn", "--epochs", "1", "--tensorboard", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--tensorboard needs the tensorboard package, which is not installed" in err
    assert "pip install -e '.[tensorboard]'" in err
    assert not (tmp_path / "r").exists()  # failed before making the run folder
