"""Variant folders: run-like folders for compressed models (their output folder, files and provenance).

A variant folder holds what a run folder holds (config.yaml, weights, labels.json, preprocess.json,
metrics.json); config.yaml gains a `provenance` block (what was done, to which run, with which
settings) and metrics.json gains the cost (size_mb, gzip_mb, latency_ms_per_image). Pruned and
distilled models keep plain float weights in model.safetensors, so `load_run` reads them; int8
models store their quantized tensors in model.int8.safetensors (compress/load.py opens any of them).
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import yaml

from .. import config as cfg
from ..errors import ConvlabError
from ..layout import CONFIG, LABELS, METRICS, ONNX_SUFFIX, PREPROCESS, QUANTIZED_WEIGHTS, RUN_MARKERS, WEIGHTS, \
    version_block
from ..files import write_json
from ..run import Run


@contextmanager
def variant_folder(out: str | Path, option: str = "--out"):
    """The output folder of a variant, created and checked; removed again if the command fails in it.

    A folder that already holds a run or a variant is refused; a failed command leaves nothing half-made.
    """
    path = Path(out).expanduser()
    if any((path / name).exists() for name in RUN_MARKERS):
        raise ConvlabError(f"{option} {path} already holds a run; choose another folder or remove it first")
    created = not path.exists()
    from ..pipeline import ensure_writable  # lazy: start-up time (predict loads this part)

    ensure_writable(path, option, "choose a writable folder")
    try:
        yield path
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:  # the folder was there (empty, or with the user's own files): take out only what this wrote
            for name in (*RUN_MARKERS, LABELS, PREPROCESS, METRICS):
                (path / name).unlink(missing_ok=True)
        raise


def write_variant_files(run: Run, provenance: dict) -> None:
    """config.yaml (with provenance), labels.json, preprocess.json and metrics.json; not the weights."""
    cfg.save_config(run.config, run.path / CONFIG, extra={**version_block(), "provenance": provenance})
    write_json(run.path / LABELS, run.classes)
    write_json(run.path / PREPROCESS, run.preprocess.to_json())
    run.save_metrics()


def provenance_of(path: Path) -> dict:
    """The provenance block of a folder's config.yaml ({} for a plain training run)."""
    try:
        document = yaml.safe_load((Path(path) / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    block = document.get("provenance") if isinstance(document, dict) else None
    return block if isinstance(block, dict) else {}


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
