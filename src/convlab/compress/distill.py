"""Knowledge distillation: a student trains on a teacher run's softened outputs and on the labels.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross-entropy

(Hinton et al., 2015; T^2 keeps the soft term's gradients on the scale of the hard one.) The student
trains through the one pipeline (a loss and a callback), so the result is an ordinary run folder; the teacher sees the same
batches: a forward pre-hook on the student hands each batch to the loss. The KL to the teacher
(T = 1, on the validation split, else on the training batches) is recorded per epoch.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from .. import config as cfg
from ..data.batches import Normalization
from ..data.run_data import RunData
from ..errors import ConvlabError
from ..layout import CONFIG, WEIGHTS, version_block
from ..run import Run
from ..tasks import load_run
from ..training.callbacks import Callback
from .measure import cost_metrics


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over the batch of KL(softmax(teacher/T) || softmax(student/T)); logits: (N, classes)."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), log_target=True, reduction="batchmean")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """alpha * T^2 * soft KL + (1 - alpha) * cross-entropy with the labels."""
    soft = soft_kl(student_logits, teacher_logits, temperature) * temperature ** 2
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


class DistillationLoss(nn.Module):
    """loss_fn(logits, labels) for the training loop; the teacher reads the batch the student just saw.

    In training mode it returns the distillation loss; in eval mode (validation) the plain
    cross-entropy, so val_loss stays comparable with a run trained without a teacher. Both modes add
    up the KL to the teacher at T = 1 for the epoch's record.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, temperature: float, alpha: float,
                 label_smoothing: float, input_scale: torch.Tensor, input_shift: torch.Tensor):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = [student]  # a list: not a submodule, so the student's parameters are not ours
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing
        # The student's normalized input -> the teacher's: x_t = x_s * scale + shift, (1, C, 1, 1).
        self.register_buffer("input_scale", input_scale)
        self.register_buffer("input_shift", input_shift)
        self.inputs: torch.Tensor | None = None
        self.hook = student.register_forward_pre_hook(self._remember)
        self.reset()

    def _remember(self, module, args) -> None:
        self.inputs = args[0]

    def reset(self) -> None:
        self.kl_sum = {"train": 0.0, "val": 0.0}
        self.seen = {"train": 0, "val": 0}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(self.inputs * self.input_scale + self.input_shift)
            split = "train" if self.student[0].training else "val"
            self.kl_sum[split] = self.kl_sum[split] + soft_kl(logits.detach(), teacher_logits, 1.0) * len(labels)
            self.seen[split] += len(labels)
        if split == "val":
            return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return distillation_loss(logits, teacher_logits, labels, self.temperature, self.alpha,
                                 self.label_smoothing)

    def epoch_kl(self) -> dict[str, float | None]:
        """Mean KL to the teacher over this epoch's training batches and validation pass."""
        return {split: float(self.kl_sum[split]) / self.seen[split] if self.seen[split] else None
                for split in ("train", "val")}


class Distiller(Callback):
    """Builds the DistillationLoss for the pipeline (`loss_for`) and records the KL per epoch."""

    needs_torch_engine = True

    def __init__(self, teacher: Run, temperature: float, alpha: float, label_smoothing: float = 0.0):
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.label_smoothing = label_smoothing
        self.loss: DistillationLoss | None = None
        self.history: list[dict] = []

    def loss_for(self, model: nn.Module, data: RunData, norm: Normalization) -> DistillationLoss:
        teacher = self.teacher
        if data.classes != teacher.classes:
            raise ConvlabError(f"--teacher {teacher.path} knows the classes {', '.join(teacher.classes[:5])}"
                               f"{', ...' if len(teacher.classes) > 5 else ''}; the data {data.splits.name} has "
                               f"{', '.join(data.classes[:5])}{', ...' if len(data.classes) > 5 else ''}; distill "
                               f"on the teacher's data and classes (leave out --data and --classes)")
        expected = (teacher.preprocess.channels, *teacher.preprocess.size)
        if tuple(data.splits.shape) != tuple(expected):
            raise ConvlabError(f"--teacher {teacher.path} takes {'x'.join(map(str, expected))} images, the data "
                               f"gives {'x'.join(map(str, data.splits.shape))}; pass --image-size to match")
        device = next(model.parameters()).device
        s_mean, s_std = (torch.tensor(v).view(1, -1, 1, 1) for v in (norm.mean, norm.std))
        t_mean, t_std = (torch.tensor(v).view(1, -1, 1, 1) for v in (teacher.preprocess.mean, teacher.preprocess.std))
        self.loss = DistillationLoss(teacher.model.to(device), model, self.temperature, self.alpha,
                                     self.label_smoothing, s_std / t_std, (s_mean - t_mean) / t_std).to(device)
        return self.loss

    def on_epoch_begin(self, state) -> None:
        self.loss.reset()

    def on_epoch_end(self, state, logs: dict) -> None:
        kl = self.loss.epoch_kl()
        self.history.append({"epoch": state.epoch, "train_kl": kl["train"], "val_kl": kl["val"]})
        logs["kl_to_teacher"] = kl["val"] if kl["val"] is not None else kl["train"]

    def on_train_end(self, state) -> None:
        self.loss.hook.remove()


def distill(teacher: str | Path | Run, *, student: str | None = None, temperature: float = 4.0, alpha: float = 0.7,
            config: str | Path | None = None, console: Console | None = None, latency_seconds: float = 0.3,
            **overrides) -> Run:
    """Train `student` (a model name) on the teacher's data with distillation; returns its run.

    The keywords are `convlab.train`'s; data, data_dir, image_size and classes default to the teacher's.
    """
    if not temperature > 0:
        raise ConvlabError(f"--temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ConvlabError(f"--alpha must be in [0, 1], got {alpha}")
    console = console or Console(highlight=False, soft_wrap=True)
    teacher_run = teacher if isinstance(teacher, Run) else load_run(teacher, command="distill --teacher")
    if student is not None:
        overrides["model"] = student
    if overrides.get("data") is None and config is None:  # the teacher's data unless told otherwise
        overrides["data"] = teacher_run.config.data.name
        for key in ("data_dir", "image_size", "classes"):
            if overrides.get(key) is None:
                overrides[key] = getattr(teacher_run.config.data, key)
    unknown = [k for k in overrides if k not in cfg.FLAT_KEYS]
    if unknown:
        cfg.coerce(unknown[0], overrides[unknown[0]], "convlab.compress.distill()")  # raises with a suggestion
    from ..pipeline import recipe_for, run_pipeline, train_job  # lazy: start-up time (predict loads this part)

    conf, _ = cfg.resolve(overrides, config, recipe_for)
    distiller = Distiller(teacher_run, temperature, alpha, conf.optim.label_smoothing)
    job = train_job(config, console=console, loss_for=distiller.loss_for, callbacks=[distiller], **overrides)
    job.command, job.resumable = "distill", False
    run = run_pipeline(job)

    teacher_accuracy = teacher_run.evaluate(arrays=run.test_data())["accuracy"]
    run.metrics["distillation"] = {
        "teacher": str(teacher_run.path), "teacher_model": teacher_run.config.model.name,
        "teacher_accuracy": teacher_accuracy, "temperature": temperature, "alpha": alpha,
        "kl_to_teacher": [row["val_kl"] for row in distiller.history],
        "train_kl": [row["train_kl"] for row in distiller.history],
        "kl_measured_on": "validation split, T=1" if distiller.history and distiller.history[0]["val_kl"]
        is not None else "training batches, T=1"}
    run.metrics.update(cost_metrics(run, run.path / WEIGHTS, latency_seconds))
    run.save_metrics()
    cfg.save_config(run.config, run.path / CONFIG, extra={
        **version_block(),
        "provenance": {"variant": "distilled", "teacher": str(teacher_run.path),
                       "teacher_model": teacher_run.config.model.name, "temperature": temperature,
                       "alpha": alpha}})
    kl = [row["val_kl"] if row["val_kl"] is not None else row["train_kl"] for row in distiller.history]
    console.print("KL to the teacher per epoch: " + " ".join(f"{v:.4f}" for v in kl), markup=False)
    console.print(f"teacher {teacher_run.config.model.name} accuracy {teacher_accuracy:.4f}, student "
                  f"{run.config.model.name} accuracy {run.metrics['accuracy']:.4f}", markup=False)
    return run
