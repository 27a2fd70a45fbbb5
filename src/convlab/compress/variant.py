"""Variant folders: run-like folders for compressed models, and loading any model a user points at.

A variant folder holds what a run folder holds (config.yaml, weights, labels.json, preprocess.json,
metrics.json); config.yaml gains a `provenance` block (what was done, to which run, with which
settings) and metrics.json gains the cost (size_mb, gzip_mb, latency_ms_per_image). Pruned and
distilled models keep plain float weights in model.safetensors, so `load_run` reads them; int8
models store their quantized tensors in model.int8.safetensors and load with `load_variant`.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from .. import config as cfg
from ..data.arrays import ImageArrays
from ..data.registry import load_dataset
from ..errors import ConvlabError
from ..run import CONFIG, LABELS, METRICS, PREPROCESS, WEIGHTS, Run, load_run
from ..session import ensure_writable

QUANTIZED_WEIGHTS = "model.int8.safetensors"
ONNX_SUFFIX = ".onnx"


def prepare_out(out: str | Path, option: str = "--out") -> Path:
    """Create the output folder; refuse one that already holds a run or a variant."""
    path = Path(out).expanduser()
    if any((path / name).exists() for name in (WEIGHTS, QUANTIZED_WEIGHTS, CONFIG)):
        raise ConvlabError(f"{option} {path} already holds a run; choose another folder or remove it first")
    ensure_writable(path, option, "choose a writable folder")
    return path


def write_variant_files(run: Run, provenance: dict) -> None:
    """config.yaml (with provenance), labels.json, preprocess.json and metrics.json; not the weights."""
    import convlab

    cfg.save_config(run.config, run.path / CONFIG,
                    extra={"convlab": {"version": convlab.__version__}, "provenance": provenance})
    (run.path / LABELS).write_text(json.dumps(run.classes, indent=1, ensure_ascii=False))
    (run.path / PREPROCESS).write_text(json.dumps(run.preprocess.to_json(), indent=1))
    (run.path / METRICS).write_text(json.dumps(run.metrics, indent=1, ensure_ascii=False))


def provenance_of(path: Path) -> dict:
    """The provenance block of a folder's config.yaml ({} for a plain training run)."""
    try:
        document = yaml.safe_load((Path(path) / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    block = document.get("provenance") if isinstance(document, dict) else None
    return block if isinstance(block, dict) else {}


def load_variant(path: str | Path) -> Run:
    """Load a run folder, a variant folder (pruned, int8, distilled) or an exported .onnx file.

    Variants other than plain float runs run on the CPU.
    """
    path = Path(path)
    if path.suffix == ONNX_SUFFIX:
        from .export import load_onnx

        return load_onnx(path)
    if (path / QUANTIZED_WEIGHTS).is_file():
        from .quantize import load_quantized

        return load_quantized(path)
    return load_run(path)


def variant_kind(run: Run) -> str:
    """A short name for what the model is: float, pruned, distilled, int8-dynamic, int8-static, onnx."""
    if run.path.suffix == ONNX_SUFFIX:
        return "onnx"
    return str(provenance_of(run.path).get("variant", "float"))


def weights_path(run: Run) -> Path:
    """The file that holds the model: what its size is measured on."""
    if run.path.suffix == ONNX_SUFFIX:
        return run.path
    if (run.path / QUANTIZED_WEIGHTS).is_file():
        return run.path / QUANTIZED_WEIGHTS
    return run.path / WEIGHTS


def load_test_split(run: Run, data: str | None = None, data_dir: str | Path | None = None
                    ) -> tuple[ImageArrays, list[str]]:
    """The test split of the run's dataset (as its config names it) or of `data`."""
    name = data or run.config.data.name
    directory = data_dir if data_dir is not None else (run.config.data.data_dir if data is None else None)
    splits = load_dataset(name, directory, image_size=run.config.data.image_size)
    return splits.test, splits.classes
