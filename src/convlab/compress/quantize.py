"""Int8 post-training quantization (dynamic or static) and its safetensors storage, with no pickle.

dynamic: torch.ao.quantization.quantize_dynamic on the Linear layers (int8 weights, activations
quantized on the fly); convolutions stay float. static: FX graph mode (prepare_fx, calibration on
training images, convert_fx) with the engine's default qconfig: int8 convolutions and linear layers
(per-channel weights, fused ReLU), float only at the input and output. Both run PyTorch's int8 CPU
kernels (x86/fbgemm/onednn engines; qnnpack on ARM).

torch.ao.quantization is deprecated in favour of torchao, whose pt2e flow needs torch.compile to run
int8 kernels; convlab keeps the eager torch.ao path while torch ships it and silences its warnings.

Storage: model.int8.safetensors holds every tensor of the quantized state dict; an int8 tensor is
stored as its integer data plus its scale(s) and zero point(s), and the metadata records the layout
and the recipe (mode, engine). Loading rebuilds the quantized module structure from the float model
and the recipe, then loads the stored tensors into it: nothing is calibrated again.
"""
from __future__ import annotations

import copy
import json
from collections import OrderedDict
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from ..config import load_saved_config
from ..data.run_data import load_run_data
from ..errors import ConvlabError
from ..layout import CONFIG, LABELS, PREPROCESS, QUANTIZED_WEIGHTS, WEIGHTS
from ..models.weights import save_safetensors
from ..run import Preprocess, Run, read_metrics, run_architecture
from ..tasks import load_run
from .measure import cost_metrics
from .variant import variant_folder, write_variant_files

MODES = ("dynamic", "static")
FORMAT = "convlab-int8/1"


@contextmanager
def quiet_torch_ao():
    """torch.ao.quantization warns on every call that it is deprecated; say it once, in the docs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=r".*must run observer before calling calculate_qparams.*")
        yield


@contextmanager
def quantized_engine(engine: str):
    """Use `engine` for packing and running int8 weights, then restore the previous one."""
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise ConvlabError(f"quantization engine '{engine}' is not available in this PyTorch build; "
                           f"it has {', '.join(e for e in supported if e != 'none')}")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def default_engine() -> str:
    engine = torch.backends.quantized.engine
    return engine if engine != "none" else "qnnpack"


def quantize_model(model: nn.Module, mode: str, example: torch.Tensor, calibration: torch.Tensor | None = None,
                   engine: str | None = None, batch_size: int = 64) -> nn.Module:
    """A float model -> its int8 version. static needs `calibration`: normalized (N, C, H, W) inputs.

    Without calibration (when only the structure is needed, before loading stored int8 tensors) the
    static model's activation scales are placeholders.
    """
    if mode not in MODES:
        raise ConvlabError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    engine = engine or default_engine()
    # Contiguous, as load_quantized rebuilds it: a made and a reloaded int8 model run the same kernels.
    model = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    with quiet_torch_ao(), quantized_engine(engine):
        if mode == "dynamic":
            return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        try:
            prepared = prepare_fx(model, get_default_qconfig_mapping(engine), (example,))
        except Exception as err:  # FX tracing fails on data-dependent control flow
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConvlabError(f"static quantization cannot trace this model ({reason}); use --mode dynamic") \
                from None
        if calibration is not None:
            with torch.inference_mode():
                for start in range(0, len(calibration), batch_size):
                    prepared(calibration[start:start + batch_size])
        return convert_fx(prepared)


# -- storage: quantized state dict <-> safetensors ----------------------------------------------------
def encode_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A quantized state dict -> (plain tensors for safetensors, JSON layout to rebuild it).

    The layout keeps the modules' state-dict versions too: quantized modules read their entries
    differently by version.
    """
    tensors: dict[str, torch.Tensor] = {}
    entries = {key: _encode(key, value, tensors) for key, value in state.items()}
    versions = {prefix: dict(meta) for prefix, meta in getattr(state, "_metadata", {}).items()}
    return tensors, {"entries": entries, "versions": versions}


def _encode(name: str, value, tensors: dict) -> dict:
    if value is None:
        return {"kind": "none"}
    if isinstance(value, torch.dtype):
        return {"kind": "dtype", "dtype": str(value).removeprefix("torch.")}
    if isinstance(value, (tuple, list)):
        return {"kind": "tuple", "items": [_encode(f"{name}#{i}", item, tensors) for i, item in enumerate(value)]}
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"cannot store {name} of type {type(value).__name__}")
    value = value.detach().cpu()
    if not value.is_quantized:
        tensors[name] = value.contiguous()
        return {"kind": "tensor"}
    tensors[name] = value.int_repr().contiguous()
    entry = {"kind": "qtensor", "dtype": str(value.dtype).removeprefix("torch.")}
    if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        entry.update(scheme="per_tensor", scale=float(value.q_scale()), zero_point=int(value.q_zero_point()))
    elif value.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                             torch.per_channel_affine_float_qparams):
        tensors[f"{name}#scales"] = value.q_per_channel_scales().contiguous()
        tensors[f"{name}#zero_points"] = value.q_per_channel_zero_points().contiguous()
        entry.update(scheme="per_channel", axis=int(value.q_per_channel_axis()))
    else:
        raise TypeError(f"cannot store {name}: quantization scheme {value.qscheme()}")
    return entry


def decode_state(tensors: dict[str, torch.Tensor], layout: dict) -> OrderedDict:
    state = OrderedDict((key, _decode(key, entry, tensors)) for key, entry in layout["entries"].items())
    state._metadata = OrderedDict(layout["versions"])  # what load_state_dict reads the versions from
    return state


def _decode(name: str, entry: dict, tensors: dict):
    kind = entry["kind"]
    if kind == "none":
        return None
    if kind == "dtype":
        return getattr(torch, entry["dtype"])
    if kind == "tuple":
        return tuple(_decode(f"{name}#{i}", item, tensors) for i, item in enumerate(entry["items"]))
    if kind == "tensor":
        return tensors[name]
    data = tensors[name]
    if entry["scheme"] == "per_tensor":
        return torch._make_per_tensor_quantized_tensor(data, entry["scale"], entry["zero_point"])
    return torch._make_per_channel_quantized_tensor(data, tensors[f"{name}#scales"],
                                                     tensors[f"{name}#zero_points"], entry["axis"])


def save_quantized(model: nn.Module, path: Path, recipe: dict) -> None:
    tensors, layout = encode_state(model.state_dict())
    save_safetensors(tensors, path, metadata={"format": FORMAT, "recipe": json.dumps(recipe),
                                              "layout": json.dumps(layout)})


def load_quantized(path: str | Path) -> Run:
    """Load an int8 variant folder (written by `quantize_run`): runs on the CPU."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    weights = path / QUANTIZED_WEIGHTS
    for required in (CONFIG, LABELS, PREPROCESS):
        if not (path / required).is_file():
            raise ConvlabError(f"int8 folder {path} has no {required}: quantize the run again")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        recipe, layout = json.loads(meta["recipe"]), json.loads(meta["layout"])
        classes = json.loads((path / LABELS).read_text())
        preprocess = Preprocess.from_json(json.loads((path / PREPROCESS).read_text()))
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise ConvlabError(f"{weights}: cannot read the int8 model ({err})") from None
    config = load_saved_config(path / CONFIG)
    float_model = run_architecture(config, preprocess, len(classes)).eval()
    example = torch.zeros(1, preprocess.channels, *preprocess.size)
    model = quantize_model(float_model, recipe["mode"], example, engine=recipe["engine"])
    with quiet_torch_ao(), quantized_engine(recipe["engine"]):
        try:
            model.load_state_dict(decode_state(tensors, layout))
        except (RuntimeError, KeyError) as err:
            raise ConvlabError(f"{weights} does not fit model {config.model.name} quantized {recipe['mode']}: "
                               f"{str(err).splitlines()[0]}") from None
    model.eval()
    return QuantizedRun(path, model, config, classes, preprocess, read_metrics(path), engine=recipe["engine"])


class QuantizedRun(Run):
    """A Run whose model is int8: inference on the CPU with the engine it was packed for."""

    def __init__(self, *args, engine: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = torch.device("cpu")
        self.engine = engine

    def predict_logits(self, images: np.ndarray) -> np.ndarray:
        with quiet_torch_ao(), quantized_engine(self.engine):
            return super().predict_logits(images)

    def forward_inputs(self, inputs: np.ndarray) -> np.ndarray:
        with quiet_torch_ao(), quantized_engine(self.engine):
            return super().forward_inputs(inputs)


def calibration_inputs(run: Run, conf, count: int) -> torch.Tensor:
    """`count` images of the run's training split drawn at random (seeded), normalized as the run expects."""
    train = load_run_data(conf, run.preprocess.channels, tuple(run.preprocess.size), f"run {run.path}").splits.train
    rng = np.random.default_rng(conf.train.seed)
    index = rng.choice(len(train), size=min(count, len(train)), replace=False)
    return run.preprocess.norm.apply(torch.from_numpy(np.asarray(train.images[np.sort(index)])))


def quantize_run(source: str | Path | Run, out: str | Path, mode: str = "dynamic", calibration_images: int = 512,
                 engine: str | None = None, data_dir: str | None = None, console: Console | None = None,
                 latency_seconds: float = 0.3) -> Run:
    """Quantize a run to int8 and write the variant folder at `out` (size, latency and accuracy in metrics)."""
    console = console or Console(highlight=False, soft_wrap=True)
    if mode not in MODES:
        raise ConvlabError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if calibration_images < 1:
        raise ConvlabError(f"--calibration-images must be >= 1, got {calibration_images}")
    run = source if isinstance(source, Run) else load_run(source, command="quantize")
    engine = engine or default_engine()
    conf = copy.deepcopy(run.config)
    if data_dir is not None:
        conf.data.data_dir = data_dir
    with variant_folder(out) as out:
        return _quantize_into(out, run, conf, mode, calibration_images, engine, console, latency_seconds)


def _quantize_into(out: Path, run: Run, conf, mode: str, calibration_images: int, engine: str, console: Console,
                   latency_seconds: float) -> Run:
    example = torch.zeros(1, run.preprocess.channels, *run.preprocess.size)
    calibration = calibration_inputs(run, conf, calibration_images) if mode == "static" else None
    model = quantize_model(run.model, mode, example, calibration, engine)
    recipe = {"mode": mode, "engine": engine, "torch": torch.__version__.split("+")[0]}
    if calibration is not None:
        recipe["calibration_images"] = len(calibration)
    save_quantized(model, out / QUANTIZED_WEIGHTS, recipe)

    quantized = QuantizedRun(out, model, conf, run.classes, run.preprocess, engine=engine)
    test = quantized.test_data()
    before = run.evaluate(arrays=test)["accuracy"]
    metrics = quantized.evaluate(arrays=test)
    with quiet_torch_ao(), quantized_engine(engine):
        metrics.update(cost_metrics(quantized, out / QUANTIZED_WEIGHTS, latency_seconds, with_sparsity=False))
    source_cost = cost_metrics(run, run.path / WEIGHTS, latency_seconds) if run.path.is_dir() else {}
    metrics["before"] = {"accuracy": before, **{k: source_cost[k] for k in ("size_mb", "latency_ms_per_image")
                                                if k in source_cost}}
    quantized.metrics = metrics
    write_variant_files(quantized, {"variant": f"int8-{mode}", "source": str(run.path), **recipe})
    lat, lat0 = metrics["latency_ms_per_image"], metrics["before"].get("latency_ms_per_image", {})
    console.print(f"int8 {mode} ({engine}): accuracy {before:.4f} -> {metrics['accuracy']:.4f}  size "
                  f"{metrics['before'].get('size_mb', float('nan')):.3f} -> {metrics['size_mb']:.3f} MB  latency "
                  f"batch 1 {lat0.get('batch_1', float('nan')):.3f} -> {lat['batch_1']:.3f} ms/image, batch 64 "
                  f"{lat0.get('batch_64', float('nan')):.3f} -> {lat['batch_64']:.3f} ms/image", markup=False)
    console.print(f"int8 model: {out}", markup=False)
    return quantized
