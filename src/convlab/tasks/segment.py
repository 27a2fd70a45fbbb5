"""Segmentation: a class for every pixel, cross-entropy (or Dice) on the masks, mIoU."""
from __future__ import annotations

import torch

from ..models.registry import count_parameters
from ..segmentation import datasets  # noqa: F401  (registers masks:, shape-masks, and coco:/yolo: for segment)
from ..segmentation.batches import SegmentationLoader
from ..segmentation.run import SegmentationInput, SegmentationRun, load_segmentation_run
from ..segmentation.run_data import SegmentationData, load_segmentation_data
from ..segmentation.targets import IGNORE, pixel_counts
from .registry import Task, classifier_only, register_task

VAL_BATCH = 8


@register_task
class Segment(Task):
    name = "segment"
    description = "a class for every pixel (mask folders, COCO and YOLO-seg polygons; generated shapes)"
    monitor, mode, test_metric = "val_miou", "max", "miou"
    history_fields = ["epoch", "train_loss", "val_loss", "val_miou", "val_pixel_accuracy", "lr", "seconds",
                      "images_per_second"]
    refuses = {**classifier_only("masks"),
               "--loader streaming": "segmentation images are decoded once and kept in memory"}
    feature_cache = False

    def load_data(self, conf, start) -> SegmentationData:
        return load_segmentation_data(conf, start.channels)

    def fresh_builder(self, conf):
        from ..segmentation.models import build_segmenter  # lazy: start-up time

        return lambda channels, classes, size, dropout: build_segmenter(conf.model.name, classes, channels)

    def loaders(self, data: SegmentationData, conf, norm, device, channels_last, ranks, generator):
        from ..segmentation.transforms import build_segmentation_augmentation  # lazy: start-up time

        augment = build_segmentation_augmentation(conf.data.augment)
        train = SegmentationLoader(data.train_items(), data.pixels, data.side, norm, conf.train.batch_size, device,
                                   shuffle=True, augment=augment, generator=generator, rank=ranks.rank,
                                   world_size=ranks.world_size, channels_last=channels_last)
        val_items = data.val_items()
        val = None if val_items is None else SegmentationLoader(val_items, data.pixels, data.side, norm, VAL_BATCH,
                                                                device, channels_last=channels_last)
        return train, val

    def loss(self, conf, data, device):
        from ..segmentation.losses import build_segmentation_loss  # lazy: start-up time

        return build_segmentation_loss(conf.optim.loss, ignore_index=IGNORE)

    @staticmethod
    def step(model, batch, loss_fn):
        """A segmenter's training step: the loss over every known pixel (and its aux head's, where it has one)."""
        images, masks = batch
        return loss_fn(model(images), masks), len(images), None

    @staticmethod
    def validate(model, loader, loss_fn) -> dict:
        """Loss, mIoU and pixel accuracy on the validation images (at the training size)."""
        from ..segmentation.metrics import ConfusionMeter  # lazy: start-up time

        model.eval()
        meter, total, count = None, 0.0, 0
        with torch.inference_mode():
            for images, masks in loader:
                logits = model(images)
                total += float(loss_fn(logits, masks)) * len(images)
                count += len(images)
                meter = meter or ConfusionMeter(logits.shape[1], ignore_index=IGNORE)
                meter.update(logits.argmax(1), masks)
        model.train()
        metrics = meter.compute()
        return {"val_loss": total / max(count, 1), "val_miou": metrics["miou"],
                "val_pixel_accuracy": metrics["pixel_accuracy"]}

    def data_line(self, data: SegmentationData, conf, model, start, device) -> str:
        n_val = 0 if data.val_rows is None else len(data.val_rows)
        counts = pixel_counts(data.train_items(), data.classes)
        total = max(sum(counts.values()), 1)
        shares = ", ".join(f"{name} {100 * count / total:.1f}%" for name, count in counts.items())
        return (f"data {data.set.name}: {len(data.train_rows)} train / {n_val} val / {len(data.test)} test images "
                f"(longer side {data.side}, {data.channels} channel{'s' if data.channels > 1 else ''}), "
                f"{len(data.classes)} classes; training pixels: {shares}; model {conf.model.name}: "
                f"{count_parameters(model):,} parameters; device {device}")

    def make_run(self, run_dir, model, conf, data: SegmentationData, norm, channels_last, device,
                 start) -> SegmentationRun:
        preprocess = SegmentationInput(data.side, data.channels, list(norm.mean), list(norm.std),
                                       backbone=getattr(model, "backbone_spec", None))
        return SegmentationRun(run_dir, model, conf, data.classes, preprocess, device=device)

    def test_metrics(self, run: SegmentationRun, data: SegmentationData) -> dict:
        return run.evaluate(items=data.test, classes=data.classes)

    def write_figures(self, run: SegmentationRun, history: list[dict], plotter) -> None:
        from ..segmentation.figures import write_segmentation_figures  # lazy: start-up time

        per_class = (run.metrics or {}).get("per_class_iou", {})
        write_segmentation_figures(run.path, history, per_class, run.worst_images())

    def summary(self, metrics: dict) -> str:
        return (f"mIoU {metrics['miou']:.4f}  Dice {metrics['dice']:.4f}  pixel accuracy "
                f"{metrics['pixel_accuracy']:.4f}  {metrics['num_images']} images")

    def load_run(self, path, device, command: str) -> SegmentationRun:
        return load_segmentation_run(path, device)
