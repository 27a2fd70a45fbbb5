"""A trained model with what it needs to be used (config, labels, preprocessing), and loading one from its folder.

The folder's file names are in layout.py; `load_run` needs nothing but the folder.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .config import Config, load_saved_config
from .data.arrays import ImageArrays
from .data.batches import Normalization
from .data.conform import conform_arrays
from .data.decode import list_images, load_image
from .data.run_data import load_test_data, map_labels
from .errors import ConvlabError
from .evaluate.calibration import calibration_report
from .evaluate.metrics import classification_metrics
from .files import write_json
from .layout import CONFIG, LABELS, METRICS, ONNX_SUFFIX, PREPROCESS, QUANTIZED_WEIGHTS, WEIGHTS
from .models.heads import put_head
from .models.inference import predict_logits, softmax
from .models.registry import create_model
from .models.tta import averaged, tta_named, tta_views
from .models.weights import save_safetensors


@dataclass
class Preprocess:
    """How images are turned into model input: resize to `size`, convert to `channels`, normalize."""

    size: list[int]  # [height, width]
    channels: int
    mean: list[float]
    std: list[float]
    normalization: str = "training data"  # where mean/std come from: the training data or pretrained weights
    data_channels: int | None = None  # channels of the training data when they differ (1 -> 3: gray repeated)
    memory_format: str | None = None  # "channels_last" or "contiguous": how training fed the model (None: unknown)
    # how outputs become answers, fitted on the validation rows after training (evaluate/calibration.py,
    # evaluate/multilabel.py): logits are divided by the temperature (one, or one per label), and a multi-label
    # run names every label whose probability reaches its threshold
    temperature: float | list[float] | None = None
    thresholds: list[float] | None = None

    @property
    def norm(self) -> Normalization:
        return Normalization(self.mean, self.std)

    def to_json(self) -> dict:
        document = {**asdict(self), "resize": "bilinear, whole image (no crop)", "scale": "pixel / 255",
                    "formula": "(pixel / 255 - mean) / std"}
        if self.memory_format is None:
            del document["memory_format"]
        for optional in ("data_channels", "temperature", "thresholds"):
            if document[optional] is None:
                del document[optional]
        if self.data_channels == 1:
            document["channel_conversion"] = f"grayscale repeated into {self.channels} channels"
        return document

    @classmethod
    def from_json(cls, data: dict) -> "Preprocess":
        """Checked: a damaged or hand-edited file must not build an absurd model (ValueError says why)."""
        size, channels, mean, std = data["size"], data["channels"], data["mean"], data["std"]
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 1 <= v <= MAX_SIDE for v in size)):
            raise ValueError(f"size must be [height, width] in 1..{MAX_SIDE}, got {size!r}")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        for name, values in (("mean", mean), ("std", std)):
            if not (isinstance(values, list) and len(values) == channels
                    and all(_is_number(v) and math.isfinite(v) for v in values)):
                raise ValueError(f"{name} must be {channels} finite numbers, got {values!r}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std!r}")
        data_channels = data.get("data_channels")
        if data_channels is not None and data_channels not in (1, 3):
            raise ValueError(f"data_channels must be 1 or 3, got {data_channels!r}")
        memory_format = data.get("memory_format")
        if memory_format not in (None, *MEMORY_FORMATS):
            raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}")
        temperature, thresholds = data.get("temperature"), data.get("thresholds")
        if temperature is not None and not _positive_numbers([temperature] if _is_number(temperature) else temperature):
            raise ValueError(f"temperature must be a positive number or a list of them, got {temperature!r}")
        if thresholds is not None and not (isinstance(thresholds, list) and all(
                _is_number(v) and 0 <= v <= 1 for v in thresholds)):
            raise ValueError(f"thresholds must be a list of numbers in 0..1, got {str(thresholds)[:80]}")
        return cls(list(size), int(channels), [float(v) for v in mean], [float(v) for v in std],
                   str(data.get("normalization", "training data")), data_channels, memory_format,
                   temperature, None if thresholds is None else [float(v) for v in thresholds])

    def scaled(self, logits: np.ndarray) -> np.ndarray:
        """Logits divided by the fitted temperature (as they are without one)."""
        if self.temperature is None:
            return logits
        return (logits / np.asarray(self.temperature, dtype=np.float32)).astype(np.float32)


MAX_SIDE = 8192  # pixels per side a run may ask images to be resized to
MEMORY_FORMATS = ("channels_last", "contiguous")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_numbers(values) -> bool:
    return isinstance(values, list) and bool(values) and all(_is_number(v) and 0 < v < math.inf for v in values)


def _check_labels(classes) -> list[str]:
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"labels.json must be a non-empty list of class names, got {str(classes)[:80]}")
    if len(set(classes)) != len(classes):
        raise ValueError("labels.json names a class twice")
    return classes


class SavedFiles:
    """How every task's run writes its folder's model files: `path`, `model`, `config`, `classes`,
    `preprocess` (with to_json) and `metrics` are the run's."""

    def save_model(self) -> None:
        """model.safetensors, labels.json and preprocess.json (readable by others: the usual file mode)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_safetensors(state, self.path / WEIGHTS, metadata={"format": "pt", "model": self.config.model.name})
        write_json(self.path / LABELS, self.classes)
        write_json(self.path / PREPROCESS, self.preprocess.to_json())

    def save_metrics(self) -> None:
        """metrics.json: the test metrics (and a variant's cost), written atomically."""
        write_json(self.path / METRICS, self.metrics)


class Run(SavedFiles):
    """A trained model with its labels and preprocessing; what `convlab.train` returns and `load_run` loads."""

    task = "classify"  # the task table's name (a detection run is a detection.run.DetectionRun)
    several_labels = False  # a multi-label run's images may have several: tools that explain one ask which

    def __init__(self, path: Path, model: nn.Module, config: Config, classes: list[str], preprocess: Preprocess,
                 metrics: dict | None = None, device: torch.device | str = "cpu"):
        self.path = Path(path)
        self.model = model
        self.config = config
        self.classes = classes
        self.preprocess = preprocess
        self.metrics = metrics
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return f"Run('{self.path}', model={self.config.model.name}, classes={len(self.classes)})"

    # -- using the model -------------------------------------------------------------------------------
    def predict_arrays(self, images: np.ndarray, tta: str = "none") -> np.ndarray:
        """(N, C, H, W) uint8 already in the run's size and channels -> probabilities (N, classes); with `tta`
        (models/tta.py) the mean of its views' probabilities."""
        return self.predict_outputs(images, tta)[1]

    def predict_outputs(self, images: np.ndarray, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
        """(N, C, h, w) uint8 images, or float32 inputs already normalized (a server's tensor input) ->
        (logits float32, probabilities float64), both (N, classes).

        tta: models/tta.py's name. Its views are run one after the other and averaged: the probabilities are the
        mean of the views' probabilities, the logits the mean of their logits. `none` is one pass, as before.
        """
        forward = self.predict_logits if images.dtype == np.uint8 else self.forward_inputs
        logits = [forward(view) for view in tta_views(images, self.preprocess.size, tta)]
        return averaged(logits), averaged([self.probabilities(view) for view in logits])

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 already in the run's size and channels -> logits (N, classes) float32."""
        if not _is_on(self.model, torch.device(self.device)):  # moving walks every module: 0.25 ms a call
            self.model.to(self.device)
        return predict_logits(self.model, images, self.preprocess.norm, self.device)

    def forward_inputs(self, inputs: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 already normalized -> logits (N, classes) float32 (a server's tensor input)."""
        if not _is_on(self.model, torch.device(self.device)):
            self.model.to(self.device)
        with torch.inference_mode():
            return self.model(torch.from_numpy(inputs).to(self.device)).float().cpu().numpy()

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits from predict_logits -> probabilities float64 (the temperature applied when one was fitted):
        predict_arrays is the two steps in a row."""
        return softmax(self.preprocess.scaled(logits))

    def test_data(self, data: str | None = None, data_dir: str | Path | None = None) -> ImageArrays:
        """The run's test split (as its config defines it: dataset, size, --classes), or `data`'s; labels in
        the run's class order, images in its size and channels."""
        return load_test_data(self.config, self.classes, self.preprocess.channels, self.preprocess.size, data,
                              None if data_dir is None else str(data_dir), who=f"run {self.path}")

    def evaluate(self, data: str | None = None, data_dir: str | Path | None = None,
                 arrays: ImageArrays | None = None, classes: list[str] | None = None, tta: str = "none") -> dict:
        """Metrics on the run's test split, another dataset's, or given arrays (labels numbered by `classes`,
        default the run's).

        tta: with test-time augmentation (models/tta.py) the metrics are those of the averaged probabilities,
        with "tta" (its name) and "without_tta" (the plain metrics, for comparison) added."""
        tta_named(tta)  # a wrong name fails before the data is read
        if arrays is None:
            arrays = self.test_data(data, data_dir)
        else:
            arrays = self._conform(arrays)
            arrays = ImageArrays(arrays.images, map_labels(arrays.labels, classes or self.classes, self.classes,
                                                           "the given data", f"run {self.path}"))
        plain = self.scored(arrays)[0]
        if tta == "none":
            return plain
        return {**self.scored(arrays, tta)[0], "tta": tta, "without_tta": plain}

    def scored(self, arrays: ImageArrays, tta: str = "none") -> tuple[dict, np.ndarray]:
        """Arrays in the run's size, channels and class order -> (classification metrics and calibration, before
        and after the run's temperature when it has one; the probabilities they were computed from), one pass
        over the images for a caller that needs both. A multi-label run scores its own way (multilabel/run.py)."""
        logits, probs = self.predict_outputs(arrays.images, tta)
        metrics = classification_metrics(arrays.labels, probs, self.classes)
        raw = None if self.preprocess.temperature is None else softmax(logits)
        metrics.update(calibration_report(probs, arrays.labels, raw))
        return metrics, probs

    def predict(self, inputs: Any, top_k: int = 5, tta: str = "none") -> list[dict]:
        """Images (paths, folders of images, PIL images or arrays) -> top-k labels with probabilities; `tta`
        (models/tta.py) averages them over its views (five-crop reads each image at its larger source size).

        Returns [{"path": str or None, "top": [{"label": str, "prob": float}, ...]}, ...].
        """
        size = tta_named(tta).source_size(tuple(self.preprocess.size))
        items = _expand_inputs(inputs, list_images)
        if not items:
            raise ConvlabError("predict: no images given (folders given held no image files)")
        images = np.stack([load_image(source, self.preprocess.channels, size) for _, source in items])
        return top_predictions(self.predict_arrays(images, tta), self.classes, [name for name, _ in items], top_k)

    def scratch_model(self):
        """The model in the NumPy engine (convlab.scratch), with the same weights; presets only."""
        from .models.to_scratch import to_scratch  # lazy: start-up time (the NumPy engine)

        return to_scratch(self.model.cpu()).eval()

    # -- helpers ---------------------------------------------------------------------------------------
    def _conform(self, arrays: ImageArrays) -> ImageArrays:
        """Bring other data to the run's channels and size (e.g. evaluating on another folder)."""
        return conform_arrays(arrays, self.preprocess.channels, self.preprocess.size, f"run {self.path}")



def read_task_run(path: Path, input_from_json) -> tuple[Config, list[str], Any]:
    """A detection or segmentation run folder's config, classes and input (`input_from_json` reads
    preprocess.json), each file checked as load_run checks a classifier's."""
    for required in (CONFIG, LABELS, PREPROCESS, WEIGHTS):
        if not (path / required).is_file():
            raise ConvlabError(f"run folder {path} has no {required}: it is not a finished convlab run; train "
                               f"again or pass the right folder")
    config = load_saved_config(path / CONFIG)
    try:
        classes = _check_labels(json.loads((path / LABELS).read_text()))
        preprocess = input_from_json(json.loads((path / PREPROCESS).read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError, ValueError) as err:
        raise ConvlabError(f"run folder {path}: labels.json or preprocess.json is damaged ({err})") from None
    return config, classes, preprocess


def load_task_weights(model: nn.Module, path: Path, what: str) -> None:
    """The run folder's model.safetensors into `model` (`what`: "detector NAME", "segmenter NAME"), in eval mode;
    a file that does not fit is one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(path / WEIGHTS)))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ConvlabError(f"{path / WEIGHTS} does not fit {what}: {str(err).splitlines()[-1].strip()}") from None
    model.eval()


def top_predictions(probs: np.ndarray, classes: list[str], names: list[str | None], top_k: int) -> list[dict]:
    """Probabilities (N, classes) -> predict's result list: [{"path": name, "top": [{"label", "prob"}, ...]}]."""
    k = max(1, min(top_k, len(classes)))
    results = []
    for name, row in zip(names, probs):
        order = np.argsort(-row)[:k]
        results.append({"path": name, "top": [{"label": classes[i], "prob": float(row[i])} for i in order]})
    return results


def _expand_inputs(inputs: Any, list_images) -> list[tuple[str | None, Any]]:
    """Flatten predict's inputs into (display name, source) pairs; folders expand to their images."""
    if isinstance(inputs, (str, Path, np.ndarray)) or not isinstance(inputs, Iterable):
        inputs = [inputs]
    items: list[tuple[str | None, Any]] = []
    for item in inputs:
        if isinstance(item, (str, Path)):
            path = Path(item)
            if path.is_dir():
                items += [(str(p), p) for p in list_images(path)]
            elif path.exists():
                items.append((str(path), path))
            else:
                raise ConvlabError(f"predict: {path} does not exist")
        else:
            items.append((None, item))
    return items


def _is_on(model: torch.nn.Module, device: torch.device) -> bool:
    """Whether the model's first parameter is on `device` ("cuda" matches any "cuda:N")."""
    first = next(model.parameters(), None)
    if first is None:
        return True
    return first.device.type == device.type and device.index in (None, first.device.index)


def load_run(path: str | Path, device: str | torch.device = "cpu", command: str = "this command",
             run_class: type[Run] = Run) -> Run:
    """Load a run folder written by `convlab train`; needs nothing but the folder.

    `command` names who needs the float run in the message for an ONNX file or an int8 variant (which
    compress.load_variant opens for the commands that only predict)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    check_float_run(path, command)
    if not path.is_dir():
        raise ConvlabError(f"run folder {path} does not exist")
    for required in (CONFIG, LABELS, PREPROCESS, WEIGHTS):
        if not (path / required).is_file():
            what = "weights" if required == WEIGHTS else required
            raise ConvlabError(f"run folder {path} has no {required} ({what} missing): it is not a finished "
                               f"convlab run; train again or pass the right folder")
    config = load_saved_config(path / CONFIG)
    try:
        classes = _check_labels(json.loads((path / LABELS).read_text()))
        preprocess = Preprocess.from_json(json.loads((path / PREPROCESS).read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError, ValueError) as err:
        raise ConvlabError(f"run folder {path}: labels.json or preprocess.json is damaged ({err})") from None
    model = run_architecture(config, preprocess, len(classes))
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        raise ConvlabError(f"{path / WEIGHTS}: cannot read the weights ({err})") from None
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise ConvlabError(f"{path / WEIGHTS} does not match model {config.model.name}: "
                           f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConvlabError(f"{path / WEIGHTS} does not fit model {config.model.name}: "
                           f"{str(err).splitlines()[-1].strip()}") from None
    model.eval()
    if trained_channels_last(preprocess, config, model):
        model.to(memory_format=torch.channels_last)  # as in training: the same kernels, the same numbers
    return run_class(path, model, config, classes, preprocess, read_metrics(path), device)


def check_float_run(path: Path, command: str) -> None:
    """Refuse the model files that are not float runs by what they are, and say what `command` needs."""
    needs = f"{command} needs a run folder with float weights"
    if path.suffix == ONNX_SUFFIX and path.is_file():
        raise ConvlabError(f"{path} is an ONNX file: {needs} (the run it was exported from)")
    if (path / QUANTIZED_WEIGHTS).is_file():
        raise ConvlabError(f"{path} is an int8 variant ({QUANTIZED_WEIGHTS}): {needs} (the run it was quantized "
                           f"from, named as source in its {CONFIG})")


def read_metrics(folder: Path) -> dict | None:
    """A run folder's metrics.json; None when it has none. A damaged one is a one-line warning, not an error:
    nothing needs the stored metrics to use the model, and `convlab eval` computes them again."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
        problem = None if isinstance(document, dict) else "not a JSON object"
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, OSError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem is None:
        return document
    print(f"warning: {path} is damaged ({problem}); its stored metrics are ignored (convlab eval {folder} computes "
          f"the test metrics again)", file=sys.stderr)
    return None


def run_architecture(config: Config, preprocess: Preprocess, num_classes: int) -> nn.Module:
    """The untrained model a run's config and preprocess describe, a fine-tune's --head included."""
    model = create_model(config.model.name, preprocess.channels, num_classes, tuple(preprocess.size),
                         config.model.dropout)
    return put_head(model, config.finetune.head, num_classes)


def _key_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def trained_channels_last(preprocess: Preprocess, config: Config, model: nn.Module) -> bool:
    """Whether training ran the model in channels_last: as recorded, or (runs from before the record) as
    --channels-last auto decides on the CPU."""
    if preprocess.memory_format is not None:
        return preprocess.memory_format == "channels_last"
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return config.train.channels_last == "on" or (config.train.channels_last == "auto" and has_conv)
