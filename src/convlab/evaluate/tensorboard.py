"""TensorBoard logging as a training callback: loss, accuracy, lr per epoch and the validation confusion matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConvlabError
from ..training.callbacks import Callback
from .plots import confusion_figure

SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_accuracy": "accuracy/train",
           "val_accuracy": "accuracy/val", "lr": "lr", "images_per_second": "images_per_second"}


def summary_writer_class():
    """torch's SummaryWriter, or a ConvlabError saying what to install when tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConvlabError("--tensorboard needs the tensorboard package, which is not installed; run "
                           "pip install -e '.[tensorboard]' in the convlab folder (or pip install tensorboard), "
                           "or drop --tensorboard") from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Writes event files into `log_dir`; view them with `tensorboard --logdir RUN_DIR/tensorboard`."""

    def __init__(self, log_dir: Path, val_loader=None, classes: list[str] | None = None):
        self.log_dir = Path(log_dir)
        self.val_loader = val_loader
        self.classes = classes or []
        self.writer = None

    def on_train_begin(self, state):
        self.writer = summary_writer_class()(log_dir=str(self.log_dir))

    def on_epoch_end(self, state, logs):
        for key, tag in SCALARS.items():
            if logs.get(key) is not None:
                self.writer.add_scalar(tag, float(logs[key]), state.epoch)
        if self.val_loader is not None and self.classes:
            matrix = self._confusion(state.validated)  # the averaged weights under --ema
            self.writer.add_figure("confusion_matrix/val",
                                   confusion_figure(matrix, self.classes, f"validation, epoch {state.epoch}"),
                                   state.epoch, close=True)
        self.writer.flush()

    def _confusion(self, model: torch.nn.Module) -> list[list[int]]:
        k = len(self.classes)
        counts = np.zeros(k * k, dtype=np.int64)
        model.eval()
        with torch.inference_mode():
            for images, labels in self.val_loader:  # counts on the device; one host copy per batch
                cell = labels * k + model(images).argmax(1)
                counts += torch.bincount(cell, minlength=k * k).cpu().numpy()
        return counts.reshape(k, k).tolist()

    def on_train_end(self, state):
        if self.writer is not None:
            self.writer.close()
