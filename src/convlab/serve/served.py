"""A model as the server serves it: loaded as `convlab predict` loads it (run folder, variant folder or .onnx
file), with the torch or onnx backend, and what the routes and the web app ask of it. Each task has its served
model (SERVED: a classifier here, a detector in detect.py, a segmenter in segment.py) answering the same
questions, so the routes, the batcher and the pages never ask which task they hold."""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console

from ..compress.export import export_onnx
from ..compress.load import load_variant
from ..errors import ConvlabError
from ..layout import ONNX, ONNX_SUFFIX, QUANTIZED_WEIGHTS
from ..models.tta import tta_named
from ..multilabel.run import label_predictions
from ..run import Run, top_predictions
from ..tasks import load_run
from .detect import ServedDetector
from .limits import decode_upload
from .oip import IMAGE, INPUT
from .results import ModelViews
from .segment import ServedSegmenter

BACKENDS = ("torch", "onnx")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # usable in a URL path as it is


@dataclass
class ServedModel:
    """A classifier as the routes use it: name, the path the user gave, labels, (C, H, W), test metrics; its
    decoding, forward pass, /predict answer and OIP tensors."""

    task = "classify"
    float_input = True  # OIP `input`: FP32 images already normalized
    top_k = 5  # /predict's default (as predict's --top-k)
    classifiable = ("probabilities", "logits")  # the OIP outputs, all open to the classification extension

    name: str
    path: Path
    run: Run
    backend: str  # "torch" or "onnx": what runs the forward pass
    onnx_file: Path | None = None  # the .onnx file onnxruntime runs (backend onnx)
    _keep: list = field(default_factory=list, repr=False)  # e.g. the temporary folder of an ONNX export
    tta: str = "none"  # --tta: the test-time augmentation every request gets (models/tta.py)

    @property
    def labels(self) -> list[str]:
        return self.run.classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.run.preprocess.channels, *self.run.preprocess.size)

    @property
    def metrics(self) -> dict | None:
        return self.run.metrics

    def decode(self, data: bytes | Image.Image, max_pixels: int) -> np.ndarray:
        """Encoded image (or one limits.open_upload opened) -> (C, H, W) uint8 in the model's size and channels
        (five-crop's larger source size with --tta five-crop): predict's preprocessing."""
        size = tta_named(self.tta).source_size(tuple(self.run.preprocess.size))
        return decode_upload(data, self.run.preprocess.channels, size, max_pixels)

    @staticmethod
    def collate(decoded: list[np.ndarray]) -> np.ndarray:
        """What decode gave for each image of a request -> the batch infer takes, (N, C, H, W)."""
        return np.stack(decoded)

    @staticmethod
    def requested(batch: np.ndarray, query: dict) -> np.ndarray:
        """The batch as its request's query asks it run (a segmenter's tile): a classifier's runs as it is."""
        return batch

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, C, H, W): uint8 images (normalized here, as predict does) or float32 model inputs already
        normalized -> (logits float32, probabilities float64), both (N, classes), averaged over the views of
        --tta as predict --tta averages them."""
        return self.run.predict_outputs(batch, self.tta)

    def answer(self, outputs: tuple, names: list[str | None], query: dict) -> list[dict]:
        """infer's outputs -> /predict's answer, predict --json's list [{"path", "top": [{"label", "prob"}]}]."""
        return top_predictions(outputs[1], self.labels, names, query.get("top_k", self.top_k))

    def describe(self) -> dict:
        """The model as GET /api/models lists it."""
        return {"name": self.name, "task": self.task, "backend": self.backend, "labels": self.labels,
                "input_shape": list(self.input_shape), "metrics": self.metrics, "tta": self.tta}

    def oip_metadata(self) -> dict:
        """OIP model metadata's inputs and outputs."""
        channels, height, width = self.input_shape
        return {"inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, channels, height, width]},
                           {"name": IMAGE, "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": output, "datatype": "FP32", "shape": [-1, len(self.labels)]}
                            for output in self.classifiable]}

    @staticmethod
    def oip_query(parameters: dict) -> dict:
        """What an OIP request's parameters ask of the outputs: nothing for a classifier."""
        return {}

    def oip_outputs(self, outputs: tuple, query: dict) -> dict[str, np.ndarray]:
        """infer's outputs -> the OIP output tensors by name (each may take Triton's classification parameter)."""
        logits, probs = outputs
        return {"probabilities": probs.astype(np.float32), "logits": logits}

    @classmethod
    def serve(cls, name: str, path: Path, run: Run, backend: str, threads: int,
              exported: Path | None) -> "ServedModel":
        """A loaded run served with `backend`: onnx uses the run's model.onnx, `exported` (an export of the run
        made before, e.g. by the parent of several workers) or an export made now into a temporary folder."""
        if backend == "torch":
            return cls(name, path, run, "torch")
        keep = []
        onnx_path = path / ONNX
        if not onnx_path.is_file() and exported is not None:
            onnx_path = exported
        if not onnx_path.is_file():
            folder = tempfile.TemporaryDirectory(prefix="convlab-serve-")
            keep.append(folder)
            onnx_path = export_onnx(run, Path(folder.name) / ONNX, console=Console(quiet=True))
        served = cls(name, path, load_variant(onnx_path, onnx_threads=threads), "onnx", onnx_path, keep)
        served.run.metrics = run.metrics  # the .onnx file has no metrics.json; the run folder does
        return served

    def views(self) -> ModelViews:
        """What the web app's pages show of this model beyond predictions."""
        return ModelViews(self.name, self.path, self.metrics)


@dataclass
class ServedMultiLabel(ServedModel):
    """A multi-label classifier: /predict names every label at or above its threshold (and the top-k); the OIP
    probabilities are one sigmoid per label."""

    task = "multilabel"

    def answer(self, outputs: tuple, names: list[str | None], query: dict) -> list[dict]:
        """infer's outputs -> predict --json's list [{"path", "labels": [{"label", "prob", "threshold"}], "top"}]."""
        return label_predictions(outputs[1], self.labels, self.run.thresholds, names,
                                 query.get("top_k", self.top_k))

    def describe(self) -> dict:
        return {**super().describe(), "thresholds": self.run.thresholds.tolist()}


def parse_spec(spec: str) -> tuple[str, Path]:
    """'NAME=PATH' or 'PATH' (named by its folder, or an .onnx file by its stem) -> (name, path)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        stripped = Path(spec.rstrip("/"))
        name = stripped.stem if stripped.suffix == ONNX_SUFFIX else stripped.name
    if not NAME_PATTERN.fullmatch(name):
        raise ConvlabError(f"model name {name!r} (from {spec!r}): use letters, digits, '.', '_' or '-' "
                           f"(at most 64, not starting with '.' or '-'); name it with NAME=PATH")
    return name, Path(path)


def load_served(name: str, path: Path, backend: str = "torch", threads: int = 0,
                exported: Path | None = None, tta: str = "none"):
    """Load `path` as predict does, as the served model of its task (SERVED). A .onnx file is a classifier
    served through onnxruntime; an int8 variant folder a classifier too. tta: --tta, for classifiers only."""
    if backend not in BACKENDS:
        raise ConvlabError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    tta_named(tta)
    if not path.exists():
        raise ConvlabError(f"{path} does not exist: give a run folder, a compress variant folder or a .onnx file")
    if path.suffix == ONNX_SUFFIX:
        return ServedModel(name, path, load_variant(path, onnx_threads=threads), "onnx", path, tta=tta)
    run = load_variant(path) if (path / QUANTIZED_WEIGHTS).is_file() else load_run(path, command="convlab serve")
    task = getattr(run, "task", ServedModel.task)
    if task not in SERVED:
        raise ConvlabError(f"{path} is a run of task {task!r}; convlab serve serves {', '.join(SERVED)} runs (use "
                           f"convlab predict for this one)")
    served = SERVED[task].serve(name, path, run, backend, threads, exported)
    if tta != "none":
        if not hasattr(served, "tta"):  # only a classifier's served model averages views
            raise ConvlabError(f"--tta is for classify and multilabel runs; {path} is a {task} run (serve it "
                               f"without --tta)")
        served.tta = tta
    return served


# the served model of each task
SERVED = {served.task: served for served in (ServedModel, ServedMultiLabel, ServedDetector, ServedSegmenter)}
