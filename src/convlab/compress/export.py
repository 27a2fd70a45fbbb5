"""ONNX export of a run, checked against PyTorch with onnxruntime, and running exported .onnx files.

The file takes `images`: float32 (N, C, H, W) already normalized, N free, and gives `logits`: (N, classes).
Its metadata_props carry what predict needs: convlab.labels, convlab.preprocess (size, channels,
mean, std) and convlab.config (the run's settings). An export is kept only if onnxruntime's outputs
match PyTorch's within the tolerance on random inputs at batch 1 and 5.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from .. import config as cfg
from ..errors import ConvlabError
from ..layout import ONNX, ONNX_SUFFIX
from ..version import __version__
from ..multilabel.run import MultiLabelRun
from ..run import Preprocess, Run

INPUT, OUTPUT = "images", "logits"
DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
CHECK_BATCHES = (1, 5)
CHECK_TEST_IMAGES = 64


def _require_onnx() -> None:
    import importlib.util

    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConvlabError(f"ONNX needs the packages {', '.join(missing)}: pip install -e '.[onnx]' in the "
                           f"convlab folder")


def export_onnx(run: Run, out: str | Path | None = None, opset: int = DEFAULT_OPSET,
                tolerance: float = DEFAULT_TOLERANCE, console: Console | None = None) -> Path:
    """Write `run` as ONNX (default RUN_DIR/model.onnx) and return the path; refuse if outputs disagree."""
    _require_onnx()
    import onnx

    console = console or Console(highlight=False, soft_wrap=True)
    if _is_quantized(run):
        raise ConvlabError(f"{run.path} is an int8 PyTorch model, which torch.onnx does not export; export the "
                           f"float run it came from (onnxruntime can quantize the ONNX model itself)")
    if not 7 <= opset <= 25:
        raise ConvlabError(f"--opset must be between 7 and 25, got {opset}")
    out = export_target(run, out, tolerance)
    model = with_temperature(copy.deepcopy(run.model).cpu().float().eval(), run.preprocess.temperature)
    shape = (run.preprocess.channels, *run.preprocess.size)
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    staging = out.with_name(out.name + ".partial")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(staging), input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
        proto = onnx.load(str(staging))
        _add_metadata(proto, run)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(staging))
        test = _check_images(run)
        difference = max_difference(staging, model, shape, test)
    except ConvlabError:
        staging.unlink(missing_ok=True)
        raise
    except Exception as err:  # the exporter's own failures (unsupported ops, tracing) come in many types
        staging.unlink(missing_ok=True)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConvlabError(f"ONNX export of {run.path} ({run.config.model.name}) failed: {reason}") from None
    checked = f"random inputs at batch {' and '.join(map(str, CHECK_BATCHES))}" + (
        f" and {len(test)} test images of the run" if test is not None else "")
    if not difference <= tolerance:  # also catches NaN
        staging.unlink(missing_ok=True)
        raise ConvlabError(f"export refused: onnxruntime's outputs differ from PyTorch's by up to {difference:.3g} "
                           f"(tolerance {tolerance:g}) on {checked}; {out} was not written")
    staging.replace(out)
    console.print(f"exported {run.config.model.name} to {out} (opset {opset}, {out.stat().st_size / 1e6:.3f} MB); "
                  f"onnxruntime matches PyTorch: max abs difference {difference:.2g} <= {tolerance:g} "
                  f"on {checked}", markup=False)
    return out


class Temperature(torch.nn.Module):
    """Divides the logits by the run's fitted temperature (one, or one per label): calibration in the graph."""

    def __init__(self, temperature: float | list[float]):
        super().__init__()
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


def with_temperature(model: torch.nn.Module, temperature: float | list[float] | None) -> torch.nn.Module:
    """The model whose outputs the exported file gives: followed by its temperature when the run has one."""
    return model if temperature is None else torch.nn.Sequential(model, Temperature(temperature)).eval()


def _is_quantized(run: Run) -> bool:
    """An int8 PyTorch model: its state holds quantized tensors (torch.onnx cannot export those)."""
    state = run.model.state_dict() if isinstance(run.model, torch.nn.Module) else {}
    return any(isinstance(v, torch.Tensor) and v.is_quantized for v in state.values())


def _check_images(run: Run, count: int = CHECK_TEST_IMAGES) -> torch.Tensor | None:
    """The first test images of the run, normalized: the check on real inputs (None when the data is not here)."""
    try:
        images = run.test_data().images[:count]
    except ConvlabError:
        return None
    return run.preprocess.norm.apply(torch.from_numpy(np.asarray(images))) if len(images) else None


def _add_metadata(proto, run: Run) -> None:
    temperature = run.preprocess.temperature
    in_graph = dataclasses.replace(run.preprocess, temperature=None)  # the graph divides by it already
    scaled = "" if temperature is None else f", already divided by the run's temperature {temperature}"
    entries = {
        "convlab.task": run.task,
        "convlab.labels": json.dumps(run.classes, ensure_ascii=False),
        "convlab.preprocess": json.dumps(in_graph.to_json()),
        "convlab.config": json.dumps(run.config.flat()),
        "convlab.version": __version__,
        "convlab.input": f"{INPUT}: float32 (N, C, H, W) = (pixel / 255 - mean) / std, see convlab.preprocess",
        "convlab.output": f"{OUTPUT}: float32 (N, classes), classes in the order of convlab.labels{scaled}; "
                          + OUTPUT_MEANING[run.task],
    }
    del proto.metadata_props[:]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"convlab {run.config.model.name} {run.task} model for {run.config.data.name}"


OUTPUT_MEANING = {"classify": "softmax over them gives the class probabilities",
                  "multilabel": "a sigmoid of each gives its label's probability; convlab.preprocess's thresholds "
                                "say which labels an image has"}


def max_difference(path: Path, model: torch.nn.Module, shape: tuple[int, ...],
                   real: torch.Tensor | None = None) -> float:
    """Largest |onnxruntime - PyTorch| over the logits of random normalized inputs at each check batch and of
    `real` normalized inputs (the run's test images) when given."""
    session = _session(path)
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    batches = [torch.randn(batch, *shape, generator=generator) for batch in CHECK_BATCHES]
    for inputs in batches + ([real] if real is not None else []):
        with torch.inference_mode():
            expected = model(inputs).numpy()
        got = session.run([OUTPUT], {INPUT: inputs.numpy()})[0]
        if got.shape != expected.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got.astype(np.float64) - expected).max()))
    return worst


def _session(path: Path, threads: int = 0):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRun(Run):
    """An exported .onnx file used like a run: predict and evaluate through onnxruntime (CPU)."""

    def __init__(self, path: Path, session, config: cfg.Config, classes: list[str], preprocess: Preprocess):
        super().__init__(path, None, config, classes, preprocess, metrics=None, device="cpu")
        self.session = session

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 -> the model's float32 input."""
        mean = np.asarray(self.preprocess.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.preprocess.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

    def predict_logits(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        out = [self.session.run([OUTPUT], {INPUT: self.normalize(images[start:start + batch_size])})[0]
               for start in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def forward_inputs(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(inputs, dtype=np.float32)})[0]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()  # in float64, as before

    def session_call(self, images: np.ndarray, threads: int = 0):
        """A no-argument call running the model once on `images` (normalized beforehand), for timing.

        threads: onnxruntime's intra-op threads (0: its default, every core).
        """
        session = _session(self.path, threads) if threads else self.session
        inputs = {INPUT: self.normalize(images)}
        return lambda: session.run([OUTPUT], inputs)


class OnnxMultiLabelRun(OnnxRun, MultiLabelRun):
    """An exported multi-label model: onnxruntime's logits, a sigmoid and a threshold per label."""

    probabilities = MultiLabelRun.probabilities


ONNX_RUNS = {"classify": OnnxRun, "multilabel": OnnxMultiLabelRun}  # the exported tasks convlab opens


def load_onnx(path: str | Path, threads: int = 0) -> OnnxRun:
    """Open a .onnx file written by `convlab export` (labels and preprocessing from its metadata).

    threads: onnxruntime's intra-op threads (0: its default, every core)."""
    _require_onnx()
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ConvlabError(f"{path} does not exist")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's decode errors have no common base class
        raise ConvlabError(f"{path}: not a readable ONNX file ({str(err).splitlines()[0] if str(err) else err})") \
            from None
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    task = meta.get("convlab.task", "classify")
    if task not in ONNX_RUNS:
        raise ConvlabError(f"{path} is an exported {meta['convlab.task']} model; convlab opens exported classifiers "
                           f"only (for now): pass the run folder it was exported from")
    if "convlab.labels" not in meta or "convlab.preprocess" not in meta:
        raise ConvlabError(f"{path} has no convlab labels/preprocessing in its metadata; export it with "
                           f"'convlab export RUN_DIR'")
    try:
        classes = json.loads(meta["convlab.labels"])
        preprocess = Preprocess.from_json(json.loads(meta["convlab.preprocess"]))
        flat = json.loads(meta.get("convlab.config", "{}"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ConvlabError(f"{path}: the convlab metadata is damaged ({err})") from None
    config = cfg.Config()
    for key, value in flat.items():
        if key in cfg.FLAT_KEYS:  # settings a later convlab added are ignored
            section, name = cfg.FLAT_KEYS[key]
            setattr(getattr(config, section), name, cfg.coerce(key, value, str(path)))
    return ONNX_RUNS[task](path, _session(path, threads), config, classes, preprocess)


def export_target(run, out: str | Path | None, tolerance: float) -> Path:
    """The checked --out file (default RUN_DIR/model.onnx) and --tolerance, shared by every task's exporter."""
    if not tolerance >= 0:
        raise ConvlabError(f"--tolerance must be >= 0, got {tolerance}")
    out = Path(out) if out is not None else run.path / ONNX
    if out.suffix != ONNX_SUFFIX:
        raise ConvlabError(f"--out {out}: the file name must end in .onnx")
    if not out.parent.is_dir():
        raise ConvlabError(f"--out {out}: the folder {out.parent} does not exist")
    return out
