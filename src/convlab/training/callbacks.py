"""Everything around the training loop, as callbacks with named hooks and a `logs` dict.

Hooks: on_train_begin(state), on_epoch_begin(state), on_batch_end(state, logs), on_validation_begin(state)
(after an epoch's batches, before its validation), on_epoch_end(state, logs), on_train_end(state). `state` is the loop's LoopState; a callback may set
`state.stop = True` to end training after the current epoch.
"""
from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..files import atomic_write_text


class Callback:
    needs_torch_engine = False  # True: acts on torch tensors or parameters, so --engine scratch refuses it

    def on_train_begin(self, state) -> None: ...

    def on_epoch_begin(self, state) -> None: ...

    def on_batch_end(self, state, logs: dict) -> None: ...

    def on_validation_begin(self, state) -> None: ...

    def on_epoch_end(self, state, logs: dict) -> None: ...

    def on_train_end(self, state) -> None: ...


C = TypeVar("C", bound=Callback)


class CallbackList(Callback):
    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks

    def on_train_begin(self, state):
        for cb in self.callbacks:
            cb.on_train_begin(state)

    def on_epoch_begin(self, state):
        for cb in self.callbacks:
            cb.on_epoch_begin(state)

    def on_batch_end(self, state, logs):
        for cb in self.callbacks:
            cb.on_batch_end(state, logs)

    def on_validation_begin(self, state):
        for cb in self.callbacks:
            cb.on_validation_begin(state)

    def on_epoch_end(self, state, logs):
        for cb in self.callbacks:
            cb.on_epoch_end(state, logs)

    def on_train_end(self, state):
        for cb in self.callbacks:
            cb.on_train_end(state)


# What an epoch's line shows, in order, for the logs a task writes: (key, label). A key a task does not log
# (a detector has no accuracy, a classifier no mAP) is left out.
EPOCH_COLUMNS = [("train_loss", "loss"), ("train_accuracy", "acc"), ("val_loss", "val_loss"),
                 ("val_accuracy", "val_acc"), ("val_mean_ap", "val_mean_AP"), ("val_map", "val_mAP"),
                 ("val_map50", "val_AP50"), ("val_miou", "val_mIoU"), ("val_mask_map", "val_mask_mAP")]


def rate(images_per_second: float) -> str:
    """Whole images a second, or two significant digits below 10 (a detector on a CPU: "0.34", never "0")."""
    return f"{images_per_second:,.0f}" if images_per_second >= 10 else f"{images_per_second:.2g}"


def epoch_line(state, logs: dict) -> str:
    """The one-line summary of an epoch, shared by the progress bar and the plain logger."""
    parts = [f"epoch {state.epoch:>{len(str(state.epochs))}}/{state.epochs}"]
    parts += [f"{label} {logs[key]:.4f}" for key, label in EPOCH_COLUMNS if logs.get(key) is not None]
    parts += [f"lr {logs['lr']:.2e}", f"{rate(logs['images_per_second'])} img/s", f"{logs['seconds']:.1f}s"]
    return "  ".join(parts)


class PlainLogger(Callback):
    """One plain line per epoch: for --quiet, logs and pipes."""

    def __init__(self, console: Console):
        self.console = console

    def on_epoch_end(self, state, logs):
        self.console.print(epoch_line(state, logs), highlight=False, markup=False)


class ProgressBar(Callback):
    """A rich progress bar per epoch showing running loss, accuracy and images/s."""

    REFRESH_SECONDS = 0.15

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None

    def on_epoch_begin(self, state):
        self.progress = Progress(
            TextColumn(f"epoch {state.epoch}/{state.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
            console=self.console, transient=True)
        self.task = self.progress.add_task("train", total=state.steps_per_epoch, stats="")
        self.progress.start()
        self.started = time.perf_counter()
        self.last_refresh = 0.0

    def on_batch_end(self, state, logs):
        now = time.perf_counter()
        if now - self.last_refresh < self.REFRESH_SECONDS and logs["batch"] < state.steps_per_epoch:
            return
        self.last_refresh = now
        seen = logs["seen"]
        accuracy = f"acc {float(logs['correct']) / seen:.4f}  " if logs.get("accuracy", True) else ""
        stats = (f"loss {float(logs['loss_sum']) / seen:.4f}  {accuracy}"
                 f"{rate(seen / max(now - self.started, 1e-9))} img/s")
        self.progress.update(self.task, completed=logs["batch"], stats=stats)

    def on_epoch_end(self, state, logs):
        self.progress.stop()
        self.console.print(epoch_line(state, logs), highlight=False, markup=False)


class History(Callback):
    """Keeps a row of metrics per epoch and rewrites metrics.csv after each one (a task names its columns)."""

    FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds",
              "images_per_second"]

    def __init__(self, csv_path: Path | None = None, fields: list[str] | None = None):
        self.csv_path = csv_path
        self.FIELDS = list(fields or self.FIELDS)
        self.rows: list[dict] = []

    def on_epoch_end(self, state, logs):
        self.rows.append({"epoch": state.epoch, **{k: logs.get(k) for k in self.FIELDS if k != "epoch"}})
        if self.csv_path is not None:
            table = io.StringIO(newline="")
            writer = csv.DictWriter(table, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(self.rows)
            atomic_write_text(self.csv_path, table.getvalue())

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [dict(row) for row in state["rows"]]


class MonitorCallback(Callback):
    """Watches one metric of the epoch's logs and remembers its best value (as Keras's MonitorCallback).

    `mode` says which way is better: "max" for accuracies (mAP, mIoU), "min" for losses. BestModel and
    EarlyStopping share it, so a task that picks its best epoch by another metric names it once.
    """

    MODES = ("max", "min")

    def __init__(self, monitor: str = "val_accuracy", mode: str = "max"):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None

    def improved(self, value: float) -> bool:
        """Whether `value` is strictly better than the best so far (the first value always is)."""
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best


class BestModel(MonitorCallback):
    """Remembers the weights of the epoch with the best monitored metric and restores them at the end.

    The weights are the ones validated: under --ema the average (LoopState.kept_model). Without a validation
    split (the metric is never logged) the last epoch's weights are kept.
    """

    def __init__(self, monitor: str = "val_accuracy", mode: str = "max"):
        super().__init__(monitor, mode)
        self.best_epoch = 0
        self.best_state: dict | None = None

    def on_epoch_end(self, state, logs):
        value = logs.get(self.monitor)
        if value is None or not self.improved(value):
            return
        self.best, self.best_epoch = value, state.epoch
        # the validated weights (the average under --ema), under the names of the model they are restored into
        self.best_state = {k: v.detach().cpu().clone() for k, v in state.kept_model.state_dict().items()}

    def on_train_end(self, state):
        if self.best_state is not None:
            state.plain_model.load_state_dict(self.best_state)
            state.best_epoch = self.best_epoch

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.best_state = state["best"], state["best_epoch"], state["best_state"]


class EarlyStopping(MonitorCallback):
    """Stops training after `patience` epochs without a better monitored metric."""

    def __init__(self, patience: int, monitor: str = "val_accuracy", mode: str = "max"):
        super().__init__(monitor, mode)
        self.patience = patience
        self.waited = 0

    def on_epoch_end(self, state, logs):
        value = logs.get(self.monitor)
        if value is None:
            return
        if self.improved(value):
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            state.stop = True
            state.stopped_early = True

    def state_dict(self) -> dict:
        return {"best": self.best, "waited": self.waited}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.waited = state["best"], state["waited"]


def find_callback(callbacks: list[Callback], kind: type[C]) -> C | None:
    """The first callback of type `kind`: callbacks are looked up by what they are, never by position."""
    return next((cb for cb in callbacks if isinstance(cb, kind)), None)


__all__ = ["Callback", "CallbackList", "PlainLogger", "ProgressBar", "History", "MonitorCallback", "BestModel",
           "EarlyStopping", "find_callback", "epoch_line"]
