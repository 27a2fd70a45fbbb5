"""A trained segmenter with what it needs to be used: classes, input, metrics; saving and loading one."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..data.decode import list_images
from ..errors import ConvlabError
from ..run import SavedFiles, _expand_inputs, load_task_weights, read_metrics, read_task_run
from .batches import fit_longer
from .run_data import as_channels, read_segmentation_data
from .targets import Masked

OVERLAP = 0.25  # the share of a tile its neighbour covers when --tile is given without --overlap


@dataclass
class SegmentationInput:
    """What a segmenter takes: images whose longer side is resized to `side` (or, tiled, windows at the
    image's own resolution), pixel / the format's maximum (255, 65535), normalized by mean and std."""

    side: int
    channels: int
    mean: list[float]
    std: list[float]
    task: str = "segment"
    backbone: str | None = None  # the classification backbone's architecture, when the encoder came from one

    def to_json(self) -> dict:
        return {**asdict(self), "resize": "longer side to `side`, aspect kept (tiled: none)",
                "scale": "pixel / the format's maximum (255, or 65535 for 16-bit images)",
                "normalization": "(x - mean) / std per channel"}

    @classmethod
    def from_json(cls, data: dict) -> "SegmentationInput":
        side, channels = data.get("side"), data.get("channels")
        if not isinstance(side, int) or isinstance(side, bool) or not 16 <= side <= 8192:
            raise ValueError(f"side must be a whole number in 16..8192, got {side!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        mean, std = data.get("mean"), data.get("std")
        if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == channels):
            raise ValueError("mean and std must be lists of one number per channel")
        return cls(side, channels, [float(m) for m in mean], [float(s) for s in std], "segment",
                   data.get("backbone"))


class SegmentationRun(SavedFiles):
    """A trained segmenter; what training returns for a segmentation run and `load_run` loads."""

    task = "segment"

    def __init__(self, path: Path, model: nn.Module, config: Config, classes: list[str],
                 preprocess: SegmentationInput, metrics: dict | None = None, device: torch.device | str = "cpu"):
        self.path = Path(path)
        self.model = model
        self.config = config
        self.classes = classes
        self.preprocess = preprocess
        self.metrics = metrics
        self.device = torch.device(device)
        self.evaluated: tuple[list[Masked], list[np.ndarray]] | None = None  # the last evaluate's truth, maps

    def __repr__(self) -> str:
        return f"SegmentationRun('{self.path}', model={self.config.model.name}, classes={len(self.classes)})"

    # -- using the model -------------------------------------------------------------------------------
    def tensor(self, image: np.ndarray, scale: float) -> torch.Tensor:
        """(H, W, C) native pixels -> the normalized (C, H, W) float32 the model takes, at the image's size."""
        pixels = torch.from_numpy(np.ascontiguousarray(as_channels(image, scale, self.preprocess.channels)
                                                       .transpose(2, 0, 1)))
        mean = torch.tensor(self.preprocess.mean).view(-1, 1, 1)
        std = torch.tensor(self.preprocess.std).view(-1, 1, 1)
        return (pixels - mean) / std

    def probabilities(self, image: np.ndarray, scale: float, tile: int | None = None,
                      overlap: float = OVERLAP) -> torch.Tensor:
        """One image -> (K, H, W) class probabilities at its own size. Without `tile`: the image resized to the
        training side, one pass, the logits resized back. With `tile`: windows of tile x tile at the image's
        own resolution, `overlap` apart, blended (a 2,000-pixel scan keeps its detail)."""
        from .tiles import predict_tiled  # lazy: start-up time

        self.model.to(self.device).eval()
        x = self.tensor(image, scale)
        with torch.inference_mode():
            if tile is not None:
                forward = lambda windows: self.model(windows.to(self.device)).float().cpu()  # noqa: E731
                return predict_tiled(forward, x, tile, overlap, len(self.classes))
            resized, _ = fit_longer(x, None, self.preprocess.side)
            logits = self.model(resized[None].to(self.device)).float()
            logits = F.interpolate(logits, size=x.shape[1:], mode="bilinear", align_corners=False)
            return logits[0].softmax(0).cpu()

    def segment(self, image: np.ndarray, scale: float = 255, tile: int | None = None,
                overlap: float = OVERLAP) -> np.ndarray:
        """One image -> its (H, W) uint8 class map."""
        return self.probabilities(image, scale, tile, overlap).argmax(0).to(torch.uint8).numpy()

    def evaluate(self, data: str | None = None, data_dir: str | Path | None = None,
                 items: list[Masked] | None = None, classes: list[str] | None = None, tile: int | None = None,
                 overlap: float = OVERLAP) -> dict:
        """mIoU, per-class IoU, Dice and pixel accuracy on the run's test split, another dataset's (`data`, as
        --data names it), or `items`, scored at each image's own size."""
        from .images import read_image  # lazy: start-up time
        from .metrics import segmentation_metrics  # lazy: start-up time

        if items is None:
            items, classes = self.test_items(data, data_dir)
        self._check_classes(classes or self.classes)
        found = [self.segment(*read_image(item.path), tile=tile, overlap=overlap) for item in items]
        self.evaluated = (items, found)
        metrics = segmentation_metrics([item.mask for item in items], found, self.classes)
        return {**metrics, "num_images": len(items)}

    def worst_images(self, count: int = 6) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]:
        """The last evaluation's `count` images of lowest mIoU: (RGB uint8, truth, prediction, title) each."""
        from .images import read_image  # lazy: start-up time
        from .metrics import segmentation_metrics  # lazy: start-up time

        if self.evaluated is None:
            return []
        items, found = self.evaluated
        scores = [segmentation_metrics([item.mask], [mask], self.classes)["miou"] for item, mask in zip(items, found)]
        worst = []
        for index in np.argsort(scores, kind="stable")[:count]:
            item = items[index]
            rgb = (as_channels(*read_image(item.path), 3) * 255).round().astype(np.uint8)
            worst.append((rgb, item.mask, found[index], f"{Path(item.path).name}: mIoU {scores[index]:.3f}"))
        return worst

    def test_items(self, data: str | None = None, data_dir: str | Path | None = None):
        """The run's test split (or `data`'s) as (items, their classes)."""
        found = read_segmentation_data(self.config, data, None if data_dir is None else str(data_dir))
        return found.test, found.classes

    def predict(self, inputs: Any, tile: int | None = None, overlap: float = OVERLAP) -> list[dict]:
        """Images (paths, folders, PIL images or arrays) -> [{"path", "width", "height", "mask": (H, W) uint8
        class map, "pixels": {class: count} for the classes present}]."""
        items = _expand_inputs(inputs, list_images)
        if not items:
            raise ConvlabError("predict: no images given (folders given held no image files)")
        out = []
        for name, source in items:
            image, scale = read_input(source)
            mask = self.segment(image, scale, tile, overlap)
            counts = np.bincount(mask.ravel(), minlength=len(self.classes))
            out.append({"path": name, "width": int(mask.shape[1]), "height": int(mask.shape[0]), "mask": mask,
                        "pixels": {self.classes[k]: int(n) for k, n in enumerate(counts) if n}})
        return out

    def _check_classes(self, classes: list[str]) -> None:
        if classes != self.classes[:len(classes)]:
            raise ConvlabError(f"the data's classes ({', '.join(classes[:10])}) are not run {self.path}'s "
                               f"({', '.join(self.classes[:10])}) in the same order; evaluate on data with the "
                               f"run's classes")


def read_input(source) -> tuple[np.ndarray, float]:
    """A path, PIL image or array -> ((H, W, C) native pixels, their maximum): 16-bit images keep their range."""
    from PIL import Image

    from .images import read_image  # lazy: start-up time

    if isinstance(source, Image.Image):
        source = np.asarray(source.convert("RGB") if source.mode not in ("L", "I;16", "I") else source)
    if isinstance(source, np.ndarray):
        image = source if source.ndim == 3 else source[..., None]
        scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
        if image.dtype == np.int32:  # Pillow's 16-bit mode I
            image, scale = image.astype(np.uint16), 65535.0
        return image, scale
    return read_image(source)


def load_segmentation_run(path: Path, device) -> SegmentationRun:
    """A segmentation run folder -> SegmentationRun (the folder's files checked as for a classifier's)."""
    from .models import build_segmenter  # lazy: start-up time

    config, classes, preprocess = read_task_run(path, SegmentationInput.from_json)
    model = build_segmenter(config.model.name, len(classes), preprocess.channels, backbone=preprocess.backbone)
    load_task_weights(model, path, f"segmenter {config.model.name}")
    return SegmentationRun(path, model, config, classes, preprocess, read_metrics(path), device)
