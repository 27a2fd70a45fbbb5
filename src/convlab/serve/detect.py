"""A detection run as the server serves it: the same questions as a served classifier (served.ServedModel)
answered with boxes. /predict answers predict --json's list; OIP `infer` answers four tensors (the layout of
docs/serving.md): `boxes` FP32 [-1, 4] and `scores` FP32 [-1] and `labels` BYTES [-1] (class names), every
image's boxes one after the other, and `count` INT64 [N], how many of them each image has."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.decode import working_size
from ..detection.run import CONF, IOU, DetectionRun
from ..errors import ConvlabError
from .errors import RequestError
from .limits import decode_upload_rgb
from .oip import IMAGE
from .results import DetectionViews

OUTPUTS = {"boxes": ("FP32", [-1, 4]), "scores": ("FP32", [-1]), "labels": ("BYTES", [-1]), "count": ("INT64", [-1])}
THRESHOLDS = {"conf": CONF, "iou": IOU}  # the request parameters of OIP infer (query parameters of /predict)


@dataclass
class Upload:
    """One decoded upload: RGB pixels at a bounded working size, and the size the image is shown at."""

    rgb: np.ndarray  # (h, w, 3) uint8
    width: int
    height: int


@dataclass
class ServedDetector:
    """A detector as the routes use it: each request's images are decoded in the decoding threads, run
    together by the batcher, and their boxes kept by each request's own `conf` and `iou`."""

    task = "detect"
    float_input = False  # OIP takes encoded images only: a detector's inputs have any size
    classifiable = ()  # no output is open to the classification extension

    name: str
    path: Path
    run: DetectionRun
    backend: str = "torch"
    onnx_file: Path | None = None

    @classmethod
    def serve(cls, name: str, path: Path, run: DetectionRun, backend: str, threads: int,
              exported: Path | None) -> "ServedDetector":
        if backend != "torch":
            raise ConvlabError(f"--backend {backend}: {path} is a detection run, served with --backend torch; "
                               f"its ONNX export runs in onnxruntime (convlab export), not in this server yet")
        return cls(name, path, run)

    @property
    def labels(self) -> list[str]:
        return self.run.classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(3, side, side): each image's longer side is resized to `side`, its aspect kept."""
        return (3, self.run.preprocess.side, self.run.preprocess.side)

    @property
    def metrics(self) -> dict | None:
        return self.run.metrics

    def decode(self, data: bytes | Image.Image, max_pixels: int) -> Upload:
        side = self.run.preprocess.side
        rgb, (width, height) = decode_upload_rgb(data, working_size((side, side)), max_pixels)
        return Upload(rgb, width, height)

    @staticmethod
    def collate(decoded: list[Upload]) -> np.ndarray:
        return _objects(decoded)

    @staticmethod
    def requested(batch: np.ndarray, query: dict) -> np.ndarray:
        """A detector's batch runs as it is: conf and iou select among its boxes afterwards."""
        return batch

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray]:
        """(N,) Uploads -> ((N,) detect_images results, boxes in each image's shown pixels, with its size)."""
        found = self.run.detect_images([upload.rgb for upload in batch], batch=max(1, len(batch)))
        for upload, result in zip(batch, found):
            height, width = upload.rgb.shape[:2]
            result["boxes"] = result["boxes"] * np.array([upload.width / width, upload.height / height] * 2,
                                                         dtype=np.float32)
            result["width"], result["height"] = upload.width, upload.height
        return (_objects(found),)

    def answer(self, outputs: tuple, names: list[str | None], query: dict) -> list[dict]:
        """infer's outputs -> predict --json's list [{"path", "width", "height", "boxes": [{"label", "score",
        "box": [x1, y1, x2, y2]}]}]."""
        conf, iou = query.get("conf", CONF), query.get("iou", IOU)
        return [{"path": name, "width": found["width"], "height": found["height"],
                 "boxes": self.run.select(found, conf, iou)} for name, found in zip(names, outputs[0])]

    def describe(self) -> dict:
        return {"name": self.name, "task": self.task, "backend": self.backend, "labels": self.labels,
                "input_shape": list(self.input_shape), "metrics": self.metrics, "thresholds": THRESHOLDS}

    def oip_metadata(self) -> dict:
        return {"inputs": [{"name": IMAGE, "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": name, "datatype": kind, "shape": shape}
                            for name, (kind, shape) in OUTPUTS.items()]}

    @staticmethod
    def oip_query(parameters: dict) -> dict:
        """The request's parameters conf and iou (predict's defaults when absent), each a number in [0, 1]."""
        return {key: oip_threshold(parameters, key) for key in THRESHOLDS}

    def oip_outputs(self, outputs: tuple, query: dict) -> dict[str, np.ndarray]:
        """infer's outputs -> boxes (M, 4), scores (M,), labels (M,) and count (N,): the boxes /predict gives
        with the same conf and iou."""
        images = [item["boxes"] for item in self.answer(outputs, [None] * len(outputs[0]), query)]
        every = [box for boxes in images for box in boxes]
        return {"boxes": np.array([box["box"] for box in every], dtype=np.float32).reshape(-1, 4),
                "scores": np.array([box["score"] for box in every], dtype=np.float32),
                "labels": _objects([box["label"] for box in every]),
                "count": np.array([len(boxes) for boxes in images], dtype=np.int64)}

    def views(self) -> DetectionViews:
        return DetectionViews(self.name, self.run)


def oip_threshold(parameters: dict, key: str) -> float:
    """The request's parameters.conf or parameters.iou: a number in [0, 1], else a 400 naming it."""
    value = parameters.get(key, THRESHOLDS[key])
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 <= value <= 1):
        raise RequestError(400, f"parameters.{key}: must be a number from 0 to 1, got {value!r:.40}")
    return float(value)


def _objects(items: list) -> np.ndarray:
    """A list -> a 1-D object array (numpy would make a 2-D array of equal-length lists)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
