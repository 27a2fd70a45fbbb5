"""ONNX export of a segmentation run, checked against PyTorch with onnxruntime on the run's test images.

The file takes `images`: float32 (N, C, H, W), pixel / the format's maximum normalized by convlab.preprocess's
mean and std, and gives `logits`: float32 (N, classes, H, W), the class scores of every pixel (argmax over axis 1
is the class map). The batch, height and width are free where the model allows it: torch.onnx's dynamo exporter
writes the segmenter's eval forward with symbolic sizes, and the export is checked at the training side and at
another size. A model whose graph fails that (an export error, or onnxruntime disagreeing at the other size) is
exported again for side x side inputs only, and the file's metadata and the printed line say so. Either way the
file is kept only if onnxruntime's logits match PyTorch's on the check inputs.
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

from ..errors import ConvlabError
from ..segmentation.batches import fit_longer
from ..segmentation.images import read_image
from ..segmentation.run import SegmentationRun
from ..version import __version__
from .export import DEFAULT_OPSET, DEFAULT_TOLERANCE, INPUT, OUTPUT, _require_onnx, _session, export_target

CHECK_IMAGES = 8  # test images of the run the export is checked on, one call each (as predict calls the model)


def export_segmenter_onnx(run: SegmentationRun, out: str | Path | None = None, opset: int = DEFAULT_OPSET,
                          tolerance: float | None = None, console: Console | None = None) -> Path:
    """Write the segmenter of `run` as ONNX (default RUN_DIR/model.onnx) and return the path; refuse it if
    onnxruntime's logits differ from PyTorch's by more than `tolerance` on the check inputs."""
    _require_onnx()
    console = console or Console(highlight=False, soft_wrap=True)
    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    if not 7 <= opset <= 25:
        raise ConvlabError(f"--opset must be between 7 and 25, got {opset}")
    out = export_target(run, out, tolerance)
    model = copy.deepcopy(run.model).cpu().float().eval()
    test = check_images(run)
    staging = out.with_name(out.name + ".partial")
    try:
        try:
            dynamic, why_fixed = True, None
            difference, inputs, real = _export_checked(model, run, test, staging, opset, dynamic=True)
            if not difference <= tolerance:
                why_fixed = f"at free sizes onnxruntime's logits differed by up to {difference:.3g}"
        except Exception as err:  # the exporter's failures come in many types: retried at a fixed size
            why_fixed = f"exporting free sizes failed: {_first_line(err)}"
        if why_fixed is not None:
            dynamic = False
            difference, inputs, real = _export_checked(model, run, test, staging, opset, dynamic=False)
    except ConvlabError:
        staging.unlink(missing_ok=True)
        raise
    except Exception as err:  # the exporter's own failures (unsupported ops, tracing) come in many types
        staging.unlink(missing_ok=True)
        raise ConvlabError(f"ONNX export of {run.path} ({run.config.model.name}) failed: {_first_line(err)}") \
            from None
    side = run.preprocess.side
    checked = (f"{sum(len(x) for x in inputs)} images of {len({tuple(x.shape[2:]) for x in inputs})} sizes "
               f"({real} of the run's test images, the others random)")
    if not difference <= tolerance:  # also catches NaN
        staging.unlink(missing_ok=True)
        raise ConvlabError(f"export refused: onnxruntime's logits differ from PyTorch's by up to {difference:.3g} "
                           f"(tolerance {tolerance:g}) on {checked}; {out} was not written")
    staging.replace(out)
    sizes = "any height and width" if dynamic else f"{side}x{side} images only ({why_fixed})"
    console.print(f"exported {run.config.model.name} to {out} (opset {opset}, {sizes}, "
                  f"{out.stat().st_size / 1e6:.3f} MB); onnxruntime matches PyTorch: max abs logit difference "
                  f"{difference:.2g} <= {tolerance:g} on {checked}", markup=False)
    return out


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _export_checked(model: nn.Module, run: SegmentationRun, test: list[torch.Tensor], path: Path, opset: int,
                    dynamic: bool) -> tuple[float, list[torch.Tensor], int]:
    """Export at free sizes (or side x side), add the metadata and return the largest logit difference on the check
    inputs that the graph takes, those inputs (batches) and how many of them are test images."""
    import onnx

    side, channels = run.preprocess.side, run.preprocess.channels
    generator = torch.Generator().manual_seed(1)
    shapes = [(2, side, side)] + ([(1, max(16, side * 3 // 4), side + side // 4)] if dynamic else [])
    inputs = [torch.randn(n, channels, h, w, generator=generator) for n, h, w in shapes]
    real = [image[None] for image in test if dynamic or tuple(image.shape[1:]) == (side, side)]
    inputs += real
    batch = torch.export.Dim("batch", min=1)
    axes = {0: batch, 2: torch.export.Dim("height", min=16), 3: torch.export.Dim("width", min=16)} if dynamic \
        else {0: batch}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (inputs[0],), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_shapes=(axes,), opset_version=opset, dynamo=True, external_data=False,
                          verbose=False)
    proto = onnx.load(str(path))
    _add_metadata(proto, run, dynamic)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return max_difference(path, model, inputs), inputs, len(real)


def check_images(run: SegmentationRun, count: int = CHECK_IMAGES) -> list[torch.Tensor]:
    """The first test images of the run as predict gives them to the model (normalized, longer side resized to the
    training side), or none when the data is not here."""
    try:
        items, _ = run.test_items()
    except ConvlabError:
        return []
    return [fit_longer(run.tensor(*read_image(item.path)), None, run.preprocess.side)[0] for item in items[:count]]


def max_difference(path: Path, model: nn.Module, inputs: list[torch.Tensor]) -> float:
    """Largest |onnxruntime - PyTorch| over the logits of every input batch; inf when a shape differs."""
    session = _session(path)
    worst = 0.0
    for batch in inputs:
        with torch.inference_mode():
            expected = model(batch).numpy()
        got = session.run([OUTPUT], {INPUT: batch.numpy()})[0]
        if got.shape != expected.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got.astype(np.float64) - expected).max()))
    return worst


def _add_metadata(proto, run: SegmentationRun, dynamic: bool) -> None:
    side = run.preprocess.side
    sizes = "N, H and W free" if dynamic else f"H = W = {side} only (this model's graph does not take other sizes)"
    entries = {
        "convlab.task": "segment",
        "convlab.labels": json.dumps(run.classes, ensure_ascii=False),
        "convlab.preprocess": json.dumps(run.preprocess.to_json()),
        "convlab.config": json.dumps(run.config.flat()),
        "convlab.version": __version__,
        "convlab.input": f"{INPUT}: float32 (N, C, H, W) = (pixel / the format's maximum - mean) / std, see "
                         f"convlab.preprocess; {sizes}; predict resizes the longer side to {side}",
        "convlab.output": f"{OUTPUT}: float32 (N, classes, H, W), classes in the order of convlab.labels; argmax "
                          f"over axis 1 is the class map",
    }
    del proto.metadata_props[:]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"convlab {run.config.model.name} segmenter for {run.config.data.name}"
