"""Classification, the first task: one label per image, cross-entropy, accuracy, a confusion matrix."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.arrays import ImageArrays
from ..data.augment import build_augmentation, build_erasing
from ..data.balance import balanced_class_weights, class_counts, counts_line, imbalance_warning
from ..data.batches import BatchLoader
from ..data.mixing import build_mixing
from ..data.run_data import RunData, load_run_data
from ..data.streaming import StreamingLoader
from ..evaluate.calibration import fit_temperature, negative_log_likelihood
from ..evaluate.plots import draw_run_plots
from ..layout import CONFUSION, CURVES, RELIABILITY
from ..models.registry import count_parameters, create_model
from ..run import Preprocess, Run, load_run
from ..training.callbacks import History
from ..training.loop import classify_step, classify_validate
from .registry import Task, register_task

VAL_BATCH = 512


@register_task
class Classify(Task):
    name = "classify"
    refuses = {"--loss dice": "the Dice loss scores masks; a classifier trains with the cross-entropy",
               "--loss dice+ce": "the Dice loss scores masks; a classifier trains with the cross-entropy"}
    description = "one label per image (image folders, MNIST, CIFAR-10, ...)"
    monitor, mode, test_metric = "val_accuracy", "max", "accuracy"
    history_fields = History.FIELDS

    def load_data(self, conf, start) -> RunData:
        data = load_run_data(conf, start.channels, start.size, who=f"--model {conf.model.name}")
        if conf.data.mixup > 0 or conf.data.cutmix > 0:
            data.splits.notes = [*data.notes, "train acc is measured against the mixed targets' larger share "
                                              "(--mixup/--cutmix), val acc against the true labels"]
        return data

    def fresh_builder(self, conf):
        return lambda channels, classes, size, dropout: create_model(conf.model.name, channels, classes, size,
                                                                     dropout)

    def loaders(self, data: RunData, conf, norm, device, channels_last, ranks, generator):
        """Training and validation batches: in memory as one tensor, or streamed from the decoded-image cache."""
        augment = build_augmentation(conf.data.augment, min(data.splits.shape[1:]), data.splits.hflip)
        # the training batches only: their shard, then erasing and mixing after normalization
        shard = {"rank": ranks.rank, "world_size": ranks.world_size, "erase": build_erasing(conf.data.erasing),
                 "mix": build_mixing(conf.data.mixup, conf.data.cutmix, len(data.classes))}
        if data.streamed:
            train = data.splits.train
            train_loader = StreamingLoader(train.images, train.labels, data.train_rows, conf.train.batch_size, norm,
                                           device, shuffle=True, augment=augment, generator=generator,
                                           channels_last=channels_last, sampler=conf.data.sampler, **shard)
            val_loader = None if data.val_rows is None else StreamingLoader(
                train.images, train.labels, data.val_rows, VAL_BATCH, norm, device, channels_last=channels_last)
            return train_loader, val_loader
        train_loader = BatchLoader(data.train_arrays(), conf.train.batch_size, norm, device, shuffle=True,
                                   augment=augment, generator=generator, channels_last=channels_last,
                                   sampler=conf.data.sampler, **shard)
        val_set = data.val_arrays()
        val_loader = None if val_set is None else BatchLoader(val_set, VAL_BATCH, norm, device,
                                                              channels_last=channels_last)
        return train_loader, val_loader

    def loss(self, conf, data: RunData, device):
        """The cross-entropy, label smoothed, on class indices or on the soft targets of --mixup/--cutmix; with
        --class-weights auto each class weighted by its inverse frequency in the training rows (data/balance.py).
        Validation scores the same loss."""
        weight = None
        if conf.optim.class_weights == "auto":
            weights = balanced_class_weights(training_labels(data), data.classes)
            weight = torch.as_tensor(weights, dtype=torch.float32, device=device)
        return nn.CrossEntropyLoss(weight=weight, label_smoothing=conf.optim.label_smoothing)

    step = staticmethod(classify_step)
    validate = staticmethod(classify_validate)

    def data_line(self, data: RunData, conf, model, start, device) -> str:
        channels, height, width = data.splits.shape
        n_val = 0 if data.val_rows is None else len(data.val_rows)
        gray = " (gray repeated)" if data.data_channels != channels else ""
        source = "" if start.norm is None else f"; normalization from {start.normalization_from}"
        line = (f"data {data.splits.name}: {len(data.train_rows)} train / {n_val} val / {len(data.test)} test "
                f"images of {channels}x{height}x{width}{gray}, {len(data.classes)} classes; model "
                f"{conf.model.name}: {count_parameters(model):,} parameters{source}; device {device}")
        counts = class_counts(training_labels(data), len(data.classes))
        lines = [line, counts_line(counts, data.classes)]
        balanced = conf.optim.class_weights == "auto" or conf.data.sampler == "balanced"
        warning = None if balanced else imbalance_warning(counts, data.classes)
        return "\n".join(lines if warning is None else [*lines, warning])

    def make_run(self, run_dir, model, conf, data: RunData, norm, channels_last, device, start) -> Run:
        channels, height, width = data.splits.shape
        preprocess = Preprocess([height, width], channels, norm.mean, norm.std, start.normalization_from,
                                data.data_channels if data.data_channels != channels else None,
                                "channels_last" if channels_last else "contiguous")
        return Run(run_dir, model, conf, data.classes, preprocess, device=device)

    def fit_outputs(self, run: Run, data: RunData, conf) -> list[str]:
        """--calibrate temperature: one temperature fitted on the validation rows (evaluate/calibration.py)."""
        return [fit_run_temperature(run, data)] if conf.train.calibrate == "temperature" else []

    def test_metrics(self, run: Run, data: RunData) -> dict:
        return run.evaluate(arrays=data.test, classes=data.classes)

    def write_figures(self, run: Run, history: list[dict], plotter) -> None:
        """Training curves, the confusion matrix and the reliability diagram; by `plotter`'s child process when
        there is one."""
        matrix, curves, confusion = run.metrics["confusion_matrix"], run.path / CURVES, run.path / CONFUSION
        reliability = reliability_job(run)
        if plotter is not None:
            plotter.draw(history, matrix, run.classes, curves, confusion, reliability)
        else:
            draw_run_plots(history, matrix, run.classes, curves, confusion, reliability)

    def summary(self, metrics: dict) -> str:
        parts = [f"accuracy {metrics['accuracy']:.4f}"]
        if "balanced_accuracy" in metrics:  # a run folder written before it was measured has none
            parts.append(f"balanced accuracy {metrics['balanced_accuracy']:.4f}")
        if "top5_accuracy" in metrics:
            parts.append(f"top-5 {metrics['top5_accuracy']:.4f}")
        parts += [f"macro F1 {metrics['macro_f1']:.4f}", f"{metrics['num_samples']} images"]
        return "  ".join(parts)

    def load_run(self, path, device, command: str) -> Run:
        return load_run(path, device, command)


def training_labels(data: RunData):
    """(N,) labels of the training rows (without the validation rows), also of a streamed split."""
    return data.splits.train.labels[data.train_rows]


def validation_set(data: RunData) -> ImageArrays:
    """The validation rows in memory (a streamed split's are read from its cache)."""
    train = data.splits.train
    return ImageArrays(np.asarray(train.images[data.val_rows]), np.asarray(train.labels[data.val_rows]))


def fit_run_temperature(run: Run, data: RunData) -> str:
    """Fit the run's temperature on its validation rows and keep it in run.preprocess; the line that says how the
    validation NLL moved."""
    val = validation_set(data)
    logits = run.predict_logits(val.images)
    run.preprocess.temperature = None
    before = negative_log_likelihood(run.probabilities(logits), val.labels)
    run.preprocess.temperature = fit_temperature(logits, val.labels)
    after = negative_log_likelihood(run.probabilities(logits), val.labels)
    shown = np.round(np.atleast_1d(run.preprocess.temperature), 3).tolist()
    return (f"temperature {shown[0] if len(shown) == 1 else shown} fitted on {len(val)} validation images: NLL "
            f"{before:.4f} -> {after:.4f}")


def reliability_job(run: Run) -> dict | None:
    """What plots.plot_reliability draws from the run's test metrics: its table, ECE and file (None: no table)."""
    metrics = run.metrics or {}
    if "reliability" not in metrics:
        return None
    return {"table": metrics["reliability"], "ece": metrics["ece"], "path": run.path / RELIABILITY}
