"""ONNX export of a detection run, checked against PyTorch with onnxruntime on the run's test images.

The file takes one image, `image`: float32 (3, H, W) of one fixed size (the run's first test image's, after
its longer side is resized to the run's `side`: side x side for square images), pixel / 255, and gives `boxes`: float32 (M, 4) xyxy in the input's pixels,
`labels`: int64 (M,) 0-based in the order of convlab.labels, and `scores`: float32 (M,), every box the detector
keeps (its own score threshold and NMS are inside). torch.onnx's TorchScript exporter writes it (torch.export,
behind the dynamo exporter, cannot follow the data-dependent box counts of torchvision's post-processing).
The size is fixed because the tracer makes constants of sizes in torchvision's transform and post-processing:
a graph traced at one size gives other boxes than PyTorch at another (measured for tiny-detector and Faster
R-CNN). The export is kept only if onnxruntime gives the same boxes as PyTorch on the run's test images of
that size, the boxes paired regardless of their order (see detections_difference).
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
from ..detection.metrics import greedy_pairs
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
        difference = max_difference(staging, model, images, tolerance)
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
    return [torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div(255) for image in images], \
        "test images"


def max_difference(path: Path, model: nn.Module, images: list[torch.Tensor], tolerance: float) -> float:
    """Largest |onnxruntime - PyTorch| over the box corners and scores of every image, the boxes paired as
    detections_difference pairs them; inf when a box of one has no partner in the other."""
    session = _session(path)
    worst = 0.0
    for image in images:
        with torch.inference_mode():
            expected = [tensor.numpy() for tensor in model(image)]
        got = session.run(list(OUTPUTS), {INPUT: image.numpy()})
        worst = max(worst, detections_difference(expected, got, tolerance))
    return worst


def detections_difference(expected, got, tolerance: float) -> float:
    """Largest |a - b| over the box corners and scores of two runtimes' detections of one image, each a
    (boxes (M, 4), labels (M,), scores (M,)) tuple, the boxes paired by pair_detections; inf when a box of one
    has no partner in the other."""
    pairs = pair_detections(expected, got, tolerance)
    if pairs is None:
        return float("inf")
    (boxes_a, _, scores_a), (boxes_b, _, scores_b) = _as_float64(expected), _as_float64(got)
    a, b = pairs
    return float(max(np.abs(boxes_a[a] - boxes_b[b]).max(initial=0.0),
                     np.abs(scores_a[a] - scores_b[b]).max(initial=0.0)))


def pair_detections(expected, got, tolerance: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Which of two runtimes' detections of one image (each (boxes (M, 4), labels (M,), scores (M,))) are the
    same boxes: (indices into expected, indices into got), or None when a box of one has no partner of its label
    in the other (or a number is NaN).

    The order of the boxes and which ones are kept come from comparisons of scores, and two runtimes agree on
    scores only up to float noise (1e-7): two boxes whose scores nearly tie may change places, and a box at the
    cut (the score threshold, the cap of boxes per image) may be kept by one runtime and not the other. So the
    boxes are paired within `tolerance` first (box corners and score, the closest pair first); a box left over
    whose score is within `tolerance` of the lowest score either runtime kept is taken as cut and left out; the
    rest are paired by label whatever their difference, so that a real disagreement shows its size.
    """
    (boxes_a, labels_a, scores_a), (boxes_b, labels_b, scores_b) = _as_float64(expected), _as_float64(got)
    if any(np.isnan(array).any() for array in (boxes_a, scores_a, boxes_b, scores_b)):
        return None
    cost = np.maximum(np.abs(boxes_a[:, None] - boxes_b[None]).max(axis=2, initial=0.0),
                      np.abs(scores_a[:, None] - scores_b[None]))  # (M, N)
    cost[labels_a[:, None] != labels_b[None]] = np.inf
    close = greedy_pairs(-cost, cost <= tolerance)  # the closest first
    left_a = np.setdiff1d(np.arange(len(scores_a)), [a for a, _ in close])
    left_b = np.setdiff1d(np.arange(len(scores_b)), [b for _, b in close])
    lowest = np.concatenate([scores_a, scores_b]).min(initial=np.inf)
    left_a, left_b = left_a[scores_a[left_a] > lowest + tolerance], left_b[scores_b[left_b] > lowest + tolerance]
    left = cost[np.ix_(left_a, left_b)]
    rest = [(left_a[a], left_b[b]) for a, b in greedy_pairs(-left, left <= np.finfo(float).max)]
    if len(rest) < max(len(left_a), len(left_b)):
        return None
    pairs = np.array(close + rest, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _as_float64(found) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, labels, scores) -> boxes (M, 4), labels (M,) and scores (M,) as float64 arrays."""
    boxes, labels, scores = found
    return (np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels, np.float64).reshape(-1),
            np.asarray(scores, np.float64).reshape(-1))


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
