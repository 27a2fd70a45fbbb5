"""Opening whatever model a user points at: a run folder of any task, a variant folder (pruned, int8, distilled)
or a .onnx file."""
from __future__ import annotations

from pathlib import Path

from ..layout import ONNX_SUFFIX, QUANTIZED_WEIGHTS
from ..run import Run
from ..tasks import load_run
from .export import load_onnx
from .quantize import load_quantized


def load_variant(path: str | Path, onnx_threads: int = 0, command: str = "this command") -> Run:
    """Load a run folder (a classifier's Run, a DetectionRun, ...), a variant folder or an exported .onnx file;
    variants other than float runs use the CPU. `command` is refused by name when the run's task cannot do it.

    onnx_threads: onnxruntime's intra-op threads for a .onnx file (0: every core)."""
    path = Path(path)
    if path.suffix == ONNX_SUFFIX:
        return load_onnx(path, onnx_threads)
    if (path / QUANTIZED_WEIGHTS).is_file():
        return load_quantized(path)
    return load_run(path, command=command)
