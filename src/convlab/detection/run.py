"""A trained detector with what it needs to be used: classes, input size, metrics; saving and loading one."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config
from ..data.decode import list_images
from ..errors import ConvlabError
from ..run import SavedFiles, _expand_inputs, load_task_weights, read_metrics, read_task_run
from .batches import resize_longer
from .models import build_detector
from .run_data import read_detection_data
from .targets import Annotated

CONF = 0.25  # predict's default score threshold (Ultralytics' default); mAP is computed on every box
IOU = 0.5  # predict's default NMS IoU threshold


@dataclass
class DetectionInput:
    """What a detector takes: RGB images whose longer side is resized to `side`, pixels / 255; the detector
    normalizes and resizes again inside (torchvision's transform)."""

    side: int
    channels: int = 3
    task: str = "detect"
    backbone: str | None = None  # the classification backbone's architecture, when the detector was built on one

    def to_json(self) -> dict:
        return {**asdict(self), "resize": "longer side to `side`, aspect kept", "scale": "pixel / 255",
                "normalization": "inside the detector (torchvision's GeneralizedRCNNTransform)"}

    @classmethod
    def from_json(cls, data: dict) -> "DetectionInput":
        side = data.get("side")
        if not isinstance(side, int) or isinstance(side, bool) or not 16 <= side <= 8192:
            raise ValueError(f"side must be a whole number in 16..8192, got {side!r}")
        return cls(side, 3, data.get("task", "detect"), data.get("backbone"))


class DetectionRun(SavedFiles):
    """A trained detector; what training returns for a detection run and `load_run` loads."""

    task = "detect"

    def __init__(self, path: Path, model: nn.Module, config: Config, classes: list[str], preprocess: DetectionInput,
                 metrics: dict | None = None, device: torch.device | str = "cpu"):
        self.path = Path(path)
        self.model = model
        self.config = config
        self.classes = classes
        self.preprocess = preprocess
        self.metrics = metrics
        self.device = torch.device(device)
        self.evaluated: tuple[list[Annotated], list[dict]] | None = None  # the last evaluate's truth and boxes
        self.training_items: list[Annotated] = []  # set by training: the boxes figure draws them

    def __repr__(self) -> str:
        return f"DetectionRun('{self.path}', model={self.config.model.name}, classes={len(self.classes)})"

    # -- using the model -------------------------------------------------------------------------------
    def detect_images(self, images: list[np.ndarray], batch: int = 8) -> list[dict]:
        """RGB uint8 (H, W, 3) images of any size -> per image {"boxes" (M, 4) xyxy in the image's pixels,
        "labels" (M,) 0-based, "scores" (M,)} as NumPy arrays, every box the detector keeps (for mAP)."""
        self.model.to(self.device).eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                chunk = images[start:start + batch]
                tensors, scales = [], []
                for image in chunk:
                    resized, scale = resize_longer(image, self.preprocess.side)
                    tensors.append(torch.from_numpy(np.array(resized)).permute(2, 0, 1).float().div_(255).to(self.device))
                    scales.append(scale)
                out += [self.in_image(found, scale, image.shape[:2])
                        for found, scale, image in zip(self.model(tensors), scales, chunk)]
        return out

    def in_image(self, found: dict, scale: float, shape: tuple[int, int]) -> dict:
        """The model's output for one image resized by `scale` -> NumPy arrays in the (height, width) image's
        pixels."""
        return {"boxes": found["boxes"].float().cpu().numpy() / scale,
                "labels": found["labels"].cpu().numpy().astype(np.int64),
                "scores": found["scores"].float().cpu().numpy()}

    def evaluate(self, data: str | None = None, data_dir: str | Path | None = None,
                 items: list[Annotated] | None = None, classes: list[str] | None = None) -> dict:
        """COCO metrics on the run's test split, another dataset's (`data`, as --data names it), or `items`."""
        if items is None:
            items, classes = self.test_items(data, data_dir)
        items = self._in_run_classes(items, classes or self.classes)
        found = self.detect_images([read_rgb(item.path) for item in items])
        self.evaluated = (items, found)
        return self.score(items, found)

    def score(self, items: list[Annotated], found: list[dict]) -> dict:
        """The metrics of `found` (detect_images' output) on `items`: COCO's box mAP."""
        from .metrics import coco_metrics  # lazy: start-up time (the COCO evaluator, the detect extra)

        return coco_metrics(items, found, self.classes)

    def test_items(self, data: str | None = None, data_dir: str | Path | None = None):
        """The run's test split (or `data`'s) as (items, their classes)."""
        found = read_detection_data(self.config, data, None if data_dir is None else str(data_dir))
        return found.test, found.classes

    def predict(self, inputs: Any, conf: float = CONF, iou: float = IOU) -> list[dict]:
        """Images (paths, folders, PIL images or arrays) -> [{"path", "width", "height", "boxes": [{"label",
        "score", "box": [x1, y1, x2, y2]}]}], boxes above `conf` after class-wise NMS at `iou`."""
        items = _expand_inputs(inputs, list_images)
        if not items:
            raise ConvlabError("predict: no images given (folders given held no image files)")
        images = [read_rgb(source) for _, source in items]
        return [{"path": name, "width": int(image.shape[1]), "height": int(image.shape[0]),
                 "boxes": self.select(found, conf, iou)}
                for (name, _), image, found in zip(items, images, self.detect_images(images))]

    def select(self, found: dict, conf: float = CONF, iou: float = IOU) -> list[dict]:
        """One image's detect_images result -> predict's boxes [{"label", "score", "box": [x1, y1, x2, y2]}]:
        those scoring at least `conf`, after class-wise NMS at `iou`, best first, every number as float32 holds it
        (see shortest)."""
        boxes, scores, labels = found["boxes"], found["scores"], found["labels"]
        return [{"label": self.classes[int(labels[i])], "score": shortest(scores[i]),
                 "box": [shortest(v) for v in boxes[i]]} for i in kept(found, conf, iou)]

    def _in_run_classes(self, items: list[Annotated], classes: list[str]) -> list[Annotated]:
        if classes == self.classes:
            return items
        unknown = sorted(set(classes) - set(self.classes))
        if unknown:
            raise ConvlabError(f"the data names classes {', '.join(unknown[:5])} that run {self.path} does not "
                               f"detect ({', '.join(self.classes[:10])}); evaluate on data with the run's classes")
        index = np.array([self.classes.index(c) for c in classes], dtype=np.int64)
        return [replace(item, labels=index[item.labels]) for item in items]


def kept(found: dict, conf: float = CONF, iou: float = IOU) -> np.ndarray:
    """The indices of one image's detect_images result that predict keeps: scoring at least `conf`, after
    class-wise NMS at `iou`, best first."""
    from torchvision.ops import batched_nms  # lazy: start-up time

    keep = np.flatnonzero(found["scores"] >= conf)
    boxes, scores, labels = (torch.from_numpy(found[k][keep]) for k in ("boxes", "scores", "labels"))
    return keep[batched_nms(boxes, scores, labels, iou).numpy()]


def shortest(value) -> float:
    """A float32 as the shortest decimal that reads back as the same float32 (0.5552005, 12.8016405).

    Predict's boxes are what eval scores, so they keep all the precision the detector gives: rounded to fewer
    digits, two scores of different images become equal and COCOeval ranks them in image order instead of by
    score, and a box moved by the rounding crosses an IoU threshold now and then; either moves mAP by 1e-3 on
    the shapes test split."""
    return float(np.format_float_positional(np.float32(value), unique=True))


def read_rgb(source) -> np.ndarray:
    """A path, PIL image or (H, W, 3) array -> RGB uint8 (H, W, 3), EXIF orientation applied."""
    from PIL import Image, ImageOps

    if isinstance(source, np.ndarray):
        return source if source.ndim == 3 else np.repeat(source[..., None], 3, axis=2)
    if isinstance(source, Image.Image):
        return np.asarray(source.convert("RGB"))
    try:
        with Image.open(source) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, ValueError) as err:
        raise ConvlabError(f"cannot read image {source}: {err}") from None


def load_detection_run(path: Path, device, build=build_detector, run_class=None) -> DetectionRun:
    """A detection run folder -> DetectionRun (the folder's files checked as load_run checks a classifier's);
    `build` and `run_class` are another task's on the same machinery (instance segmentation's Mask R-CNN)."""
    config, classes, preprocess = read_task_run(path, DetectionInput.from_json)
    model = build(config.model.name, len(classes), preprocess.side, backbone=preprocess.backbone)
    load_task_weights(model, path, f"detector {config.model.name}")
    return (run_class or DetectionRun)(path, model, config, classes, preprocess, read_metrics(path), device)
