"""The task table, a leaf: each task is one object whose methods own what differs between tasks.

The pipeline, the loop and the tools call these methods and never ask which task they hold (as Ultralytics
keeps TASK2DATA, TASK2MODEL and TASK2METRIC in one table). A task is inferred from the dataset (the data
registry's entry names it), recorded in config.yaml, and `--task` overrides it.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..config import load_saved_config
from ..data.augment import POLICIES as PHOTO_POLICIES
from ..data.registry import parse_data_name
from ..errors import ConvlabError
from ..layout import CONFIG
from ..run import check_float_run


class Task:
    """One task's answers. Subclasses fill in every method; the attributes are its row in the table."""

    name: str = ""
    description: str = ""
    monitor: str = "val_accuracy"  # the validation metric that picks the best epoch and drives early stopping
    mode: str = "max"
    test_metric: str = "accuracy"  # the test metric compare and tune rank runs by
    history_fields: list[str] = []  # metrics.csv's columns
    refuses: dict[str, str] = {}  # what this task cannot do yet: option or command -> why (refused by name)
    feature_cache: bool = True  # a frozen backbone's features may be computed once (training/feature_cache.py)

    # data -> model -> loaders -> step/validate -> run -> metrics -> figures
    def load_data(self, conf, start) -> Any: ...
    def fresh_builder(self, conf): ...
    def loaders(self, data, conf, norm, device, channels_last, ranks, generator): ...
    def loss(self, conf, data, device): ...  # data: the training rows (class weights)
    def step(self, model, batch, loss_fn): ...
    def validate(self, model, loader, loss_fn) -> dict: ...
    def make_run(self, run_dir, model, conf, data, norm, channels_last, device, start): ...

    def fit_outputs(self, run, data, conf) -> list[str]:
        """After training, fit on the validation rows how outputs become answers (a temperature, thresholds) and
        keep it in run.preprocess; returns the lines to print. Nothing to fit by default."""
        return []
    def test_metrics(self, run, data) -> dict: ...
    def write_figures(self, run, history: list[dict], plotter) -> None: ...
    def summary(self, metrics: dict) -> str: ...
    def data_line(self, data, conf) -> str: ...
    def load_run(self, path, device, command: str): ...

    def refuse(self, what: str, run=None) -> None:
        """Raise the task's one-line refusal of `what` (a command or option) when it cannot do it; `run` names
        the run folder it was asked of."""
        if what in self.refuses:
            whose = "" if run is None else f"{run} is a {self.name} run; "
            raise ConvlabError(f"{whose}{what} is not available for {self.name} runs yet: {self.refuses[what]}")


def classifier_only(shown: str) -> dict[str, str]:
    """What every task but classification refuses: the options and tools written for one label per image.
    `shown` is what `predict --save` draws for the task instead (boxes, masks)."""
    return {"--engine scratch": "the NumPy engine trains classifiers; use --engine torch",
            "--tensorboard": "it logs a classifier's confusion matrix; follow metrics.csv instead",
            "gradcam": f"Grad-CAM explains a classifier's one label per image; use predict --save to see the {shown}",
            "attribute": f"attribution explains a classifier's one label per image; use predict --save to see the "
                         f"{shown}",
            "features": "feature maps are drawn for classifiers only",
            "quantize": "int8 quantization is written for classifiers; export --format onnx instead",
            "prune": "pruning and its fine-tuning are written for classifiers",
            "distill --teacher": "distillation learns a classifier's softened outputs",
            "report --method": "the report's attribution section explains classifiers; leave out --method",
            "--class-weights auto": "it weights a classifier's one label per image by its class's frequency",
            "--calibrate temperature": "temperature scaling calibrates a classifier's class probabilities",
            "--sampler balanced": "it balances a classifier's one label per image; an image here holds objects or "
                                  "pixels of several classes",
            **{f"--augment {policy}": f"the photo policies move pixels, not the {shown}; use --augment light or "
                                      f"standard" for policy in PHOTO_POLICIES},
            "--erasing": f"random erasing is written for one label per image (it would hide {shown} without "
                         f"changing them)",
            "--mixup": f"mixup blends one label per image; the {shown} have no soft version",
            "--cutmix": f"cutmix mixes one label per image by area; the {shown} have no soft version"}


TASKS: dict[str, Task] = {}


def register_task(task_class: type[Task]) -> type[Task]:
    """Class decorator: one instance of each task in the table."""
    TASKS[task_class.name] = task_class()
    return task_class


def find_task(name: str) -> Task:
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConvlabError(f"unknown task '{name}' for --task.{hint} Choose from {', '.join(TASKS)}.")
    return TASKS[name]


def task_of(conf) -> Task:
    """The run's task: its config's `task`, else the one its dataset names."""
    entry, arg = parse_data_name(conf.data.name)
    if conf.data.task and conf.data.task not in entry.tasks:
        raise ConvlabError(f"--task {conf.data.task} does not fit --data {conf.data.name}: its labels are for "
                           f"{' or '.join(entry.tasks)}; leave --task out, or give data labelled for "
                           f"{conf.data.task}")
    return find_task(conf.data.task or entry.task_for(arg))


def run_task(path) -> Task:
    """The task of a run folder: its config.yaml's (a folder without one is left to the classifier's checks)."""
    config = Path(path) / CONFIG
    return task_of(load_saved_config(config)) if config.is_file() else find_task("classify")


def load_run(path, device="cpu", command: str = "this command"):
    """Any run folder -> the Run of its task (a classifier's Run, a DetectionRun, ...); needs nothing but the
    folder. `command` names who needs it in the messages for what is not a float run folder, and is refused
    by name (before the model is built) when the run's task cannot do it yet."""
    path = Path(path)
    check_float_run(path, command)
    task = run_task(path)
    task.refuse(command, path)
    return task.load_run(path, device, command)
