"""A segmentation run as the server serves it: the same questions as a served classifier (served.ServedModel)
answered with class maps. /predict answers predict --json's list, each mask a palette PNG (base64) or, with
?mask=rle, one COCO RLE per class present; OIP `infer` answers two tensors (the layout of docs/serving.md):
`class_map` UINT8 [-1], every image's (H, W) class map flattened row by row, one after the other, and `shape`
INT64 [N, 2], each image's height and width. Both may run sliding windows: /predict's ?tile=&overlap=, OIP's
parameters tile and overlap (predict's --tile and --overlap)."""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import ConvlabError
from ..segmentation.figures import palette_image
from ..segmentation.run import OVERLAP, SegmentationRun, read_input
from ..segmentation.tiles import MIN_TILE
from .detect import _objects
from .errors import RequestError
from .limits import open_upload
from .oip import IMAGE
from .results import SegmentationViews

OUTPUTS = {"class_map": ("UINT8", [-1]), "shape": ("INT64", [-1, 2])}
MAX_TILE = 2048  # a tile is one forward pass of tile x tile pixels: the most one request may ask


@dataclass
class Upload:
    """One decoded upload at its own size and depth (16-bit kept), as `convlab predict` reads a file."""

    pixels: np.ndarray  # (H, W, C) uint8 or uint16
    scale: float  # the pixels' maximum: 255 or 65535
    tile: int | None = None  # sliding windows of tile x tile, as the request asked (None: one whole pass)
    overlap: float = OVERLAP


def png_mask(mask: np.ndarray) -> str:
    """(H, W) class map -> base64 of a palette PNG whose pixel values are the class indices."""
    buffer = io.BytesIO()
    palette_image(mask).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def rle_masks(mask: np.ndarray, classes: list[str]) -> dict[str, dict]:
    """(H, W) class map -> {class: COCO RLE {"size": [H, W], "counts": text}} for each class present."""
    from faster_coco_eval.core import mask as coco_mask

    present = np.unique(mask).tolist()
    stacked = np.asfortranarray(np.stack([mask == k for k in present], axis=2).astype(np.uint8))
    return {classes[k]: {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            for k, rle in zip(present, coco_mask.encode(stacked))}


MASK_FORMATS = {"png": lambda mask, classes: png_mask(mask), "rle": rle_masks}  # /predict's ?mask=


@dataclass
class ServedSegmenter:
    """A segmenter as the routes use it: each upload decoded at its own size in the decoding threads, segmented
    in the batcher's thread (one pass per image: their sizes differ), answered as a class map."""

    task = "segment"
    float_input = False  # OIP takes encoded images only: a segmenter's inputs have any size
    classifiable = ()  # no output is open to the classification extension

    name: str
    path: Path
    run: SegmentationRun
    backend: str = "torch"
    onnx_file: Path | None = None

    @classmethod
    def serve(cls, name: str, path: Path, run: SegmentationRun, backend: str, threads: int,
              exported: Path | None) -> "ServedSegmenter":
        if backend != "torch":
            raise ConvlabError(f"--backend {backend}: {path} is a segmentation run, served with --backend torch; "
                               f"its ONNX export runs in onnxruntime (convlab export), not in this server yet")
        return cls(name, path, run)

    @property
    def labels(self) -> list[str]:
        return self.run.classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, side, side): each image's longer side is resized to `side`, its aspect kept."""
        return (self.run.preprocess.channels, self.run.preprocess.side, self.run.preprocess.side)

    @property
    def metrics(self) -> dict | None:
        return self.run.metrics

    def decode(self, data: bytes | Image.Image, max_pixels: int) -> Upload:
        """The upload at its own size, EXIF rotation applied, 16-bit gray kept (the mask is the image's size)."""
        image = data if isinstance(data, Image.Image) else open_upload(data, max_pixels)
        try:
            return Upload(*read_input(ImageOps.exif_transpose(image)))
        except (OSError, ValueError, SyntaxError) as err:
            raise RequestError(422, f"cannot decode the image ({str(err)[:200]})") from None

    @staticmethod
    def collate(decoded: list[Upload]) -> np.ndarray:
        return _objects(decoded)

    @staticmethod
    def requested(batch: np.ndarray, query: dict) -> np.ndarray:
        """The uploads with their request's tile and overlap: each is run as its request asked, also when the
        batcher groups it with other requests' images."""
        for upload in batch:
            upload.tile, upload.overlap = query.get("tile"), query.get("overlap", OVERLAP)
        return batch

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray]:
        """(N,) Uploads -> ((N,) (H, W) uint8 class maps, each at its image's size)."""
        return (_objects([self.run.segment(upload.pixels, upload.scale, upload.tile, upload.overlap)
                          for upload in batch]),)

    def answer(self, outputs: tuple, names: list[str | None], query: dict) -> list[dict]:
        """infer's outputs -> predict --json's list [{"path", "width", "height", "pixels": {class: count},
        "mask": base64 palette PNG, or {class: RLE} with query mask="rle"}]."""
        encode = MASK_FORMATS[query.get("mask", "png")]
        found = []
        for name, mask in zip(names, outputs[0]):
            counts = np.bincount(mask.ravel(), minlength=len(self.labels))
            found.append({"path": name, "width": int(mask.shape[1]), "height": int(mask.shape[0]),
                          "pixels": {self.labels[k]: int(n) for k, n in enumerate(counts) if n},
                          "mask": encode(mask, self.labels)})
        return found

    def describe(self) -> dict:
        return {"name": self.name, "task": self.task, "backend": self.backend, "labels": self.labels,
                "input_shape": list(self.input_shape), "metrics": self.metrics}

    def oip_metadata(self) -> dict:
        return {"inputs": [{"name": IMAGE, "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": name, "datatype": kind, "shape": shape}
                            for name, (kind, shape) in OUTPUTS.items()]}

    @staticmethod
    def oip_query(parameters: dict) -> dict:
        """The request's parameters tile (whole pixels, MIN_TILE..MAX_TILE; absent: one whole pass) and overlap
        (a fraction in [0, 1)), else a 400 naming the parameter."""
        tile, overlap = parameters.get("tile"), parameters.get("overlap", OVERLAP)
        if tile is not None and (not isinstance(tile, int) or isinstance(tile, bool)
                                 or not MIN_TILE <= tile <= MAX_TILE):
            raise RequestError(400, f"parameters.tile: must be a whole number of pixels from {MIN_TILE} to "
                                    f"{MAX_TILE}, got {tile!r:.40}")
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not (
                math.isfinite(overlap) and 0 <= overlap < 1):
            raise RequestError(400, f"parameters.overlap: must be a number from 0 up to (not including) 1, "
                                    f"got {overlap!r:.40}")
        return {"tile": tile, "overlap": float(overlap)}

    def oip_outputs(self, outputs: tuple, query: dict) -> dict[str, np.ndarray]:
        """infer's outputs -> class_map (sum of H * W,) uint8 and shape (N, 2) int64."""
        maps = list(outputs[0])
        return {"class_map": np.concatenate([mask.ravel() for mask in maps]).astype(np.uint8),
                "shape": np.array([mask.shape for mask in maps], dtype=np.int64).reshape(-1, 2)}

    def views(self) -> SegmentationViews:
        return SegmentationViews(self.name, self.run)
