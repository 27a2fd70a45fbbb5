"""Object detection: boxes and classes per image, a torchvision detector's own losses, COCO mAP."""
from __future__ import annotations

import torch

from ..detection import datasets  # noqa: F401  (registers coco:, yolo:, voc: and shapes)
from ..detection.batches import DetectionLoader
from ..detection.figures import write_detection_figures
from ..detection.models import build_detector
from ..detection.run import DetectionInput, DetectionRun, load_detection_run
from ..detection.targets import box_counts
from ..detection.transforms import build_detection_augmentation
from ..detection.run_data import DetectionData, load_detection_data
from ..models.registry import count_parameters
from .registry import Task, classifier_only, register_task

VAL_BATCH = 8


@register_task
class Detect(Task):
    name = "detect"
    description = "boxes and a class for each object (COCO, YOLO and Pascal VOC files; generated shapes)"
    monitor, mode, test_metric = "val_map", "max", "map"
    history_fields = ["epoch", "train_loss", "val_map", "val_map50", "lr", "seconds", "images_per_second"]
    # the tools that explain or shrink a classifier (a detector has no single logit to explain and its RoI heads
    # and post-processing are not what the int8 and pruning recipes were written for)
    refuses = {**classifier_only("boxes"),
               "--loader streaming": "detection images are decoded once and kept in memory",
               "--loss dice": "a detector trains with its own losses (torchvision's)",
               "--loss dice+ce": "a detector trains with its own losses (torchvision's)"}
    feature_cache = False

    def load_data(self, conf, start) -> DetectionData:
        return load_detection_data(conf)

    def fresh_builder(self, conf):
        return lambda channels, classes, size, dropout: build_detector(conf.model.name, classes, max(size))

    def loaders(self, data: DetectionData, conf, norm, device, channels_last, ranks, generator):
        augment = build_detection_augmentation(conf.data.augment)
        train = DetectionLoader(data.train_items(), conf.train.batch_size, device, shuffle=True, augment=augment,
                                generator=generator, rank=ranks.rank, world_size=ranks.world_size,
                                max_side=data.side, classes=data.classes)
        val_items = data.val_items()
        val = None if val_items is None else DetectionLoader(val_items, VAL_BATCH, device, max_side=data.side,
                                                             classes=data.classes)
        return train, val

    def loss(self, conf, data, device):
        return None  # torchvision's detectors compute their own losses in train mode

    @staticmethod
    def step(model, batch, loss_fn):
        """A detector's training step: the sum of its losses (classification, box regression, ...)."""
        images, targets = batch
        losses = model(images, targets)
        return sum(losses.values()), len(images), None

    @staticmethod
    def validate(model, loader, loss_fn) -> dict:
        """COCO mAP@[.5:.95] and AP50 on the validation images."""
        from ..detection.metrics import coco_metrics  # lazy: start-up time (the COCO evaluator, the detect extra)

        model.eval()
        found = []
        with torch.inference_mode():
            for images, _ in loader:
                found += [{k: v.float().cpu().numpy() if k != "labels" else v.cpu().numpy() for k, v in out.items()}
                          for out in model(images)]
        model.train()
        metrics = coco_metrics(loader.truth, found, loader.classes)
        return {"val_map": metrics["map"], "val_map50": metrics["map50"]}

    def data_line(self, data: DetectionData, conf, model, start, device) -> str:
        n_val = 0 if data.val_rows is None else len(data.val_rows)
        counts = ", ".join(f"{name} {count}" for name, count in box_counts(data.set.train, data.classes).items())
        return (f"data {data.set.name}: {len(data.train_rows)} train / {n_val} val / {len(data.test)} test images "
                f"(longer side {data.side}), {len(data.classes)} classes; training boxes: {counts}; model "
                f"{conf.model.name}: {count_parameters(model):,} parameters; device {device}")

    def make_run(self, run_dir, model, conf, data: DetectionData, norm, channels_last, device, start) -> DetectionRun:
        backbone = getattr(model, "backbone_spec", None)
        run = DetectionRun(run_dir, model, conf, data.classes, DetectionInput(data.side, backbone=backbone),
                           device=device)
        run.training_items = data.train_items()
        return run

    def test_metrics(self, run: DetectionRun, data: DetectionData) -> dict:
        return run.evaluate(items=data.test, classes=data.classes)

    def write_figures(self, run: DetectionRun, history: list[dict], plotter) -> None:
        write_detection_figures(run, history)

    def summary(self, metrics: dict) -> str:
        return (f"mAP {metrics['map']:.4f}  AP50 {metrics['map50']:.4f}  AP75 {metrics['map75']:.4f}  "
                f"{metrics['num_images']} images")

    def load_run(self, path, device, command: str) -> DetectionRun:
        return load_detection_run(path, device)
