"""Instance segmentation: a mask, a box and a class for every object (Mask R-CNN), mask AP picking the best epoch.

It runs on detection's machinery (its loader carries the masks, its transforms move them, its COCO plumbing
scores them), so it is the detection task with its own model table, metrics and run.
"""
from __future__ import annotations

import torch

from ..detection.run import DetectionInput
from ..segmentation.instance import datasets  # noqa: F401  (registers shape-instances, instances:, coco: masks)
from ..segmentation.instance.models import build_mask_model
from ..segmentation.instance.run import InstanceRun, load_instance_run
from .detect import Detect
from .registry import register_task


@register_task
class Instance(Detect):
    name = "instance"
    description = "a mask, a box and a class for each object (COCO polygons or RLE, instance-id PNGs; shapes)"
    monitor, mode, test_metric = "val_mask_map", "max", "mask_map"
    history_fields = ["epoch", "train_loss", "val_mask_map", "val_box_map", "lr", "seconds", "images_per_second"]
    refuses = {**Detect.refuses,
               "--loss dice": "Mask R-CNN trains with its own losses (torchvision's, a mask loss among them)",
               "--loss dice+ce": "Mask R-CNN trains with its own losses (torchvision's, a mask loss among them)",
               "predict": "the command line prints boxes only; use convlab.load_run(RUN).predict(images) for the "
                          "masks",
               "export": "the ONNX exporter writes a detector's boxes, not masks",
               "compare": "compare ranks classifiers and detectors",
               "report": "the report is written for classifiers and detectors",
               "convlab serve": "the server answers with labels or boxes, not masks"}

    def fresh_builder(self, conf):
        return lambda channels, classes, size, dropout: build_mask_model(conf.model.name, classes, max(size))

    @staticmethod
    def validate(model, loader, loss_fn) -> dict:
        """COCO mask mAP@[.5:.95] (the monitor) and box mAP on the validation images."""
        from ..segmentation.instance.metrics import instance_metrics  # lazy: start-up time (the COCO evaluator)

        model.eval()
        found = []
        with torch.inference_mode():
            for images, _ in loader:
                found += [{"boxes": out["boxes"].float().cpu().numpy(), "labels": out["labels"].cpu().numpy(),
                           "scores": out["scores"].float().cpu().numpy(),
                           "masks": (out["masks"][:, 0] > 0.5).cpu().numpy()} for out in model(images)]
        model.train()
        metrics = instance_metrics(loader.truth, found, loader.classes)
        return {"val_mask_map": metrics["mask_map"], "val_box_map": metrics["box_map"]}

    def make_run(self, run_dir, model, conf, data, norm, channels_last, device, start) -> InstanceRun:
        preprocess = DetectionInput(data.side, task=self.name, backbone=getattr(model, "backbone_spec", None))
        run = InstanceRun(run_dir, model, conf, data.classes, preprocess, device=device)
        run.training_items = data.train_items()
        return run

    def summary(self, metrics: dict) -> str:
        return (f"mask mAP {metrics['mask_map']:.4f}  AP50 {metrics['mask_map50']:.4f}  AP75 "
                f"{metrics['mask_map75']:.4f}  box mAP {metrics['box_map']:.4f}  {metrics['num_images']} images")

    def load_run(self, path, device, command: str) -> InstanceRun:
        return load_instance_run(path, device)
