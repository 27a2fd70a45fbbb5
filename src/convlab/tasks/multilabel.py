"""Several labels per image: a sigmoid per class, the binary cross-entropy, thresholds fitted on validation.

The classifier's data, model, loaders and run folder, with its own loss, validation, metrics and answers
(multilabel/). A csv: file with several labels in a row is this task; --multi-label (or --task multilabel) asks
for it on a file whose rows hold one label each.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import csv_table  # noqa: F401  (registers csv:, whose multi-label rows this task reads)
from ..data.run_data import RunData, load_run_data
from ..errors import ConvlabError
from ..layout import CURVES
from ..evaluate.calibration import fit_temperature
from ..evaluate.multilabel import f1_thresholds, multilabel_metrics
from ..models.registry import count_parameters
from ..multilabel.run import MultiLabelRun
from ..multilabel.training import MultiLabelLoss, multilabel_step, multilabel_validate, positive_weights
from ..run import load_run
from .classify import Classify, reliability_job, validation_set
from .registry import register_task

MULTI_LABEL = "the rows hold several labels each"
MIN_POSITIVES = 5  # validation images a label needs before its threshold is fitted (fewer: it stays 0.5)


@register_task
class MultiLabel(Classify):
    name = "multilabel"
    description = "several labels per image, a sigmoid and a threshold each (csv: files)"
    monitor, mode, test_metric = "val_mean_ap", "max", "mean_ap"
    history_fields = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_mean_ap", "val_micro_f1",
                      "val_accuracy", "lr", "seconds", "images_per_second"]
    refuses = {**Classify.refuses,
               "--engine scratch": "the NumPy engine trains softmax classifiers; use --engine torch",
               "--tensorboard": "it logs a softmax classifier's confusion matrix; follow metrics.csv instead",
               "--sampler balanced": f"it balances one class per image and {MULTI_LABEL}",
               "--mixup": f"mixup is written for one label per image ({MULTI_LABEL})",
               "--cutmix": f"cutmix is written for one label per image ({MULTI_LABEL})",
               "--classes": f"--classes keeps the images of some classes and {MULTI_LABEL}; write a CSV with "
                            "the labels you want",
               "--train-per-class": f"it counts images per class and {MULTI_LABEL}",
               "distill --teacher": "distillation learns a teacher's softmax over classes, and a multi-label "
                                    "model has a sigmoid per label",
               "quantize": "the int8 variants are scored as softmax classifiers; export --format onnx instead",
               "prune": "pruning fine-tunes and scores a softmax classifier",
               "features": "feature maps are drawn for single-label classifiers only",
               "report --method": "the report's attribution section explains a single-label classifier; leave "
                                  "out --method (use attribute --target LABEL)"}

    def load_data(self, conf, start) -> RunData:
        data = load_run_data(conf, start.channels, start.size, who=f"--model {conf.model.name}")
        if not data.splits.train.multi_hot:
            raise ConvlabError(f"--data {conf.data.name} holds one label per image, not a label list: multi-label "
                               f"training reads csv: files (a label column with several labels separated by a "
                               f"space or ';')")
        return data

    def loss(self, conf, data: RunData, device):
        """The binary cross-entropy per label; --class-weights auto weights each label's positives by its
        negatives / positives in the training rows (multilabel/training.py)."""
        weight = None
        if conf.optim.class_weights == "auto":
            labels = data.splits.train.labels[data.train_rows]
            weight = torch.as_tensor(positive_weights(np.asarray(labels)), dtype=torch.float32, device=device)
        return MultiLabelLoss(weight, conf.optim.label_smoothing)

    step = staticmethod(multilabel_step)
    validate = staticmethod(multilabel_validate)

    def data_line(self, data: RunData, conf, model, start, device) -> str:
        channels, height, width = data.splits.shape
        n_val = 0 if data.val_rows is None else len(data.val_rows)
        labels = np.asarray(data.splits.train.labels[data.train_rows])
        counts = labels.sum(axis=0).astype(np.int64)
        common = ", ".join(f"{data.classes[i]} {int(counts[i])}" for i in np.argsort(-counts)[:8])
        absent = [data.classes[i] for i in np.flatnonzero(counts == 0)]
        lines = [f"data {data.splits.name}: {len(data.train_rows)} train / {n_val} val / {len(data.test)} test "
                 f"images of {channels}x{height}x{width}, {len(data.classes)} labels, {labels.sum(1).mean():.2f} "
                 f"per image; model {conf.model.name}: {count_parameters(model):,} parameters; device {device}",
                 f"training images per label (most common): {common}"]
        if absent:
            lines.append(f"warning: {len(absent)} labels have no training image ({', '.join(absent[:5])}"
                         f"{', ...' if len(absent) > 5 else ''}); the model cannot learn them")
        return "\n".join(lines)

    def make_run(self, run_dir, model, conf, data: RunData, norm, channels_last, device, start) -> MultiLabelRun:
        run = super().make_run(run_dir, model, conf, data, norm, channels_last, device, start)
        return MultiLabelRun(run.path, run.model, run.config, run.classes, run.preprocess, device=device)

    def fit_outputs(self, run: MultiLabelRun, data: RunData, conf) -> list[str]:
        """A temperature per label (--calibrate temperature), then each label's F1-optimal threshold, both on the
        validation rows; without validation rows every threshold stays 0.5."""
        if data.val_rows is None:
            return ["thresholds: 0.5 for every label (--val-fraction 0 holds out no rows to choose them on)"]
        val = validation_set(data)
        logits = run.predict_logits(val.images)
        lines = []
        if conf.train.calibrate == "temperature":
            run.preprocess.temperature = fit_temperature(logits, val.labels)
            shown = np.round(run.preprocess.temperature, 2)
            lines.append(f"temperature per label fitted on {len(val)} validation images: {shown.min()} to "
                         f"{shown.max()}")
        probs = run.probabilities(logits)
        thresholds = f1_thresholds(val.labels, probs, MIN_POSITIVES)
        run.preprocess.thresholds = [round(float(t), 6) for t in thresholds]
        at_half = multilabel_metrics(val.labels, probs, run.classes, np.full(len(run.classes), 0.5))
        tuned = multilabel_metrics(val.labels, probs, run.classes, thresholds)
        fitted = int((val.labels.sum(axis=0) >= MIN_POSITIVES).sum())
        kept = "" if fitted == len(run.classes) else (f"; {len(run.classes) - fitted} labels with fewer than "
                                                      f"{MIN_POSITIVES} validation positives keep 0.5")
        lines.append(f"thresholds fitted (F1-optimal) for {fitted} of {len(run.classes)} labels on {len(val)} "
                     f"validation images{kept}: validation macro F1 {at_half['macro_f1']:.4f} at 0.5 -> "
                     f"{tuned['macro_f1']:.4f}")
        return lines

    def write_figures(self, run: MultiLabelRun, history: list[dict], plotter) -> None:
        """Training curves and the reliability diagram (no confusion matrix: an image has several labels)."""
        from ..evaluate.plots import plot_curves, plot_reliability  # lazy: start-up time (matplotlib)

        if history:
            plot_curves(history, run.path / CURVES)
        job = reliability_job(run)
        if job is not None:
            plot_reliability(job["table"], job["ece"], job["path"])

    def summary(self, metrics: dict) -> str:
        return (f"mean AP {metrics['mean_ap'] or 0:.4f}  micro F1 {metrics['micro_f1']:.4f}  macro F1 "
                f"{metrics['macro_f1']:.4f}  subset accuracy {metrics['subset_accuracy']:.4f}  Hamming loss "
                f"{metrics['hamming_loss']:.4f}  ECE {metrics['ece']:.4f}  {metrics['num_samples']} images")

    def load_run(self, path, device, command: str) -> MultiLabelRun:
        return load_run(path, device, command, run_class=MultiLabelRun)

