"""A trained Mask R-CNN with what it needs to be used: a DetectionRun whose objects also have masks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...data.decode import list_images
from ...detection.run import CONF, IOU, DetectionRun, kept, load_detection_run, read_rgb, shortest
from ...detection.targets import Annotated
from ...errors import ConvlabError
from ...run import _expand_inputs
from .models import build_mask_model


class InstanceRun(DetectionRun):
    """A trained instance segmentation run; what training returns for one and `load_run` loads."""

    task = "instance"

    def in_image(self, found: dict, scale: float, shape: tuple[int, int]) -> dict:
        """Boxes, labels and scores as a detector's, and "masks" (M, H, W) bool on the image as given: the
        model's mask probabilities resized to it (bilinear) and cut at 0.5, as torchvision's reference does."""
        out = super().in_image(found, scale, shape)
        probabilities = found["masks"].float()
        if probabilities.shape[-2:] != shape and len(probabilities):
            probabilities = torch.nn.functional.interpolate(probabilities, size=shape, mode="bilinear",
                                                            align_corners=False)
        out["masks"] = (probabilities[:, 0] > 0.5).cpu().numpy().reshape(-1, *shape)
        return out

    def score(self, items: list[Annotated], found: list[dict]) -> dict:
        """Mask AP@[.5:.95] (mask_map, mask_map50, ...), the box AP of the same objects (box_map, ...) and
        per_class_ap of the masks."""
        from .metrics import instance_metrics  # lazy: start-up time (the COCO evaluator)

        return instance_metrics(items, found, self.classes)

    def predict(self, inputs: Any, conf: float = CONF, iou: float = IOU) -> list[dict]:
        """Images (paths, folders, PIL images or arrays) -> [{"path", "width", "height", "objects": [{"label",
        "score", "box": [x1, y1, x2, y2], "mask": (H, W) bool}]}], objects scoring at least `conf` after
        class-wise NMS of their boxes at `iou`, best first."""
        items = _expand_inputs(inputs, list_images)
        if not items:
            raise ConvlabError("predict: no images given (folders given held no image files)")
        images = [read_rgb(source) for _, source in items]
        return [{"path": name, "width": int(image.shape[1]), "height": int(image.shape[0]),
                 "objects": self.objects(found, conf, iou)}
                for (name, _), image, found in zip(items, images, self.detect_images(images))]

    def objects(self, found: dict, conf: float = CONF, iou: float = IOU) -> list[dict]:
        """One image's detect_images result -> predict's objects (see predict)."""
        return [{"label": self.classes[int(found["labels"][i])], "score": shortest(found["scores"][i]),
                 "box": [shortest(v) for v in found["boxes"][i]], "mask": found["masks"][i]}
                for i in kept(found, conf, iou)]


def load_instance_run(path: Path, device) -> InstanceRun:
    """An instance segmentation run folder -> InstanceRun (checked as a detection run folder is)."""
    return load_detection_run(path, device, build_mask_model, InstanceRun)
