"""ONNX export of a detection run, checked against PyTorch with onnxruntime on the run's test images.

The file takes one image, `image`: float32 (3, H, W) of one fixed size (the run's first test image's, after
its longer side is resized to the run's `side`: side x side for square images), pixel / 255, and gives `boxes`: float32 (M, 4) xyxy in the input's pixels,
`labels`: int64 (M,) 0-based in the order of convlab.labels, and `scores`: float32 (M,), every box the detector
keeps (its own score threshold and NMS are inside). torch.onnx's TorchScript exporter writes it (torch.export,
behind the dynamo exporter, cannot follow the data-dependent box counts of torchvision's post-processing).
The size is fixed because the tracer makes constants of sizes in torchvision's transform and post-processing:
a graph traced at one size gives other boxes than PyTorch at another (measured for tiny-detector and Faster
R-CNN). The export is kept only if onnxruntime gives the same boxes as PyTorch on the run's test images of
that size.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from ..detection.batches import resize_longer
from ..detection.run import DetectionRun, read_rgb
from ..errors import ConvlabError
from ..version import __version__
from .export import _require_onnx, _session, export_target

INPUT, OUTPUTS = "image", ("boxes", "labels", "scores")
DEFAULT_TOLERANCE = 1e-3  # largest |onnxruntime - PyTorch| on a box corner (pixels) or a score
CHECK_IMAGES = 16  # test images of the run the export is checked on (those of the exported size)


class OneImage(nn.Module):
    """A convlab detector called on one image, its outputs as a tuple: what ONNX can hold."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        found = self.detector([image])[0]
        return found["boxes"], found["labels"], found["scores"]


def export_detector_onnx(run: DetectionRun, out: str | Path | None = None, opset: int = 17,
                         tolerance: float | None = None, console: Console | None = None) -> Path:
    """Write the detector of `run` as ONNX (default RUN_DIR/model.onnx) and return the path; refuse it if
    onnxruntime's boxes, labels or scores differ from PyTorch's on the check images."""
    _require_onnx()
    import onnx

    console = console or Console(highlight=False, soft_wrap=True)
    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    if not 7 <= opset <= 20:
        raise ConvlabError(f"--opset must be between 7 and 20 for a detector (torch.onnx's TorchScript exporter), "
                           f"got {opset}")
    out = export_target(run, out, tolerance)
    model = OneImage(copy.deepcopy(run.model).cpu().float().eval()).eval()
    test, source = check_images(run)
    staging = out.with_name(out.name + ".partial")
    try:
        images = [image for image in test if image.shape == test[0].shape]
        _export(model, images[0], staging, opset)
        proto = onnx.load(str(staging))
        _add_metadata(proto, run, tuple(images[0].shape))
        onnx.checker.check_model(proto)
        onnx.save(proto, str(staging))
        difference = max_difference(staging, model, images)
    except ConvlabError:
        staging.unlink(missing_ok=True)
        raise
    except Exception as err:  # the exporter's own failures (unsupported ops, tracing) come in many types
        staging.unlink(missing_ok=True)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvlabError(f"ONNX export of {run.path} ({run.config.model.name}) failed: {reason}") from None
    width, height = images[0].shape[2], images[0].shape[1]
    checked = f"{len(images)} {source} of {width}x{height} px"
    if not difference <= tolerance:  # also catches NaN and a different number of boxes (inf)
        staging.unlink(missing_ok=True)
        raise ConvlabError(f"export refused: onnxruntime's boxes differ from PyTorch's by up to {difference:.3g} "
                           f"(tolerance {tolerance:g}) on {checked}; {out} was not written")
    staging.replace(out)
    console.print(f"exported {run.config.model.name} to {out} (opset {opset}, {width}x{height} images, "
                  f"{out.stat().st_size / 1e6:.3f} MB); "
                  f"onnxruntime matches PyTorch: max abs difference of boxes (px) and scores {difference:.2g} <= "
                  f"{tolerance:g} on {checked}", markup=False)
    return out


def _export(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    """torch.onnx's TorchScript exporter, at the example's size; the number of boxes stays free."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=[INPUT], output_names=list(OUTPUTS),
                          dynamic_axes={name: {0: "boxes"} for name in OUTPUTS}, opset_version=opset, dynamo=False)


def check_images(run: DetectionRun, count: int = CHECK_IMAGES) -> tuple[list[torch.Tensor], str]:
    """The first test images of the run as the detector takes them (longer side `side`, pixel / 255), or
    random images of side x side when the data is not here."""
    try:
        items, _ = run.test_items()
    except ConvlabError:
        items = []
    if not items:
        generator = torch.Generator().manual_seed(0)
        return [torch.rand(3, run.preprocess.side, run.preprocess.side, generator=generator)
                for _ in range(2)], "random images"
    images = [resize_longer(read_rgb(item.path), run.preprocess.side)[0] for item in items[:count]]
    return [torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255) for image in images], \
        "test images"


def max_difference(path: Path, model: nn.Module, images: list[torch.Tensor]) -> float:
    """Largest |onnxruntime - PyTorch| over the box corners and scores of every image; inf when the boxes'
    number or labels differ."""
    session = _session(path)
    worst = 0.0
    for image in images:
        with torch.inference_mode():
            expected = [tensor.numpy() for tensor in model(image)]
        got = session.run(list(OUTPUTS), {INPUT: image.numpy()})
        if got[0].shape != expected[0].shape or not np.array_equal(got[1], expected[1]):
            return float("inf")
        for index in (0, 2):
            if expected[index].size:
                worst = max(worst, float(np.abs(got[index].astype(np.float64) - expected[index]).max()))
    return worst


def _add_metadata(proto, run: DetectionRun, shape: tuple[int, ...]) -> None:
    entries = {
        "convlab.task": "detect",
        "convlab.labels": json.dumps(run.classes, ensure_ascii=False),
        "convlab.preprocess": json.dumps(run.preprocess.to_json()),
        "convlab.config": json.dumps(run.config.flat()),
        "convlab.version": __version__,
        "convlab.input": f"{INPUT}: float32 {shape} (C, H, W) = pixel / 255, the image's longer side resized to "
                         f"{run.preprocess.side} (convlab.preprocess's side); one image per call, of this size only",
        "convlab.output": "boxes: float32 (M, 4) x1 y1 x2 y2 in the input's pixels; labels: int64 (M,) 0-based "
                          "in the order of convlab.labels; scores: float32 (M,)",
    }
    del proto.metadata_props[:]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"convlab {run.config.model.name} detector for {run.config.data.name}"
