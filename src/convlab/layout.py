"""The run folder's layout: the name of every file a run or variant folder holds, and its config's version block.

A run folder (written by every command that trains) and a variant folder (compress, distill) share these
names; nothing else in convlab spells them, so a reader and a writer cannot drift apart.
"""
from __future__ import annotations

from .version import __version__

CONFIG = "config.yaml"  # every setting, resolved; variants add a provenance block
WEIGHTS = "model.safetensors"  # the float weights of the best validation epoch
QUANTIZED_WEIGHTS = "model.int8.safetensors"  # an int8 variant's tensors and their layout
LABELS = "labels.json"  # class names, in output order
PREPROCESS = "preprocess.json"  # size, channels, mean/std, memory format, temperature, thresholds: what predict applies
METRICS = "metrics.json"  # test metrics (and a variant's cost)
HISTORY = "metrics.csv"  # one row per epoch
CURVES = "curves.png"
RELIABILITY = "reliability.png"  # the test split's reliability diagram (evaluate/calibration.py)
CONFUSION = "confusion_matrix.png"  # a detector's: at IoU 0.5, with a background row and column
PR_CURVES = "pr_curves.png"  # a detector's precision-recall curves at IoU 0.5
BOXES = "boxes.png"  # a detection run's training boxes: sizes and classes
DATA_ISSUES = "data_issues.json"  # unreadable images the loader skipped
CHECKPOINTS = "checkpoints"  # the folder of training state inside a run
LAST = "last.safetensors"  # written after every epoch (and on Ctrl-C): what --resume reads
BEST = "best.safetensors"  # the weights of the best validation epoch so far
TENSORBOARD = "tensorboard"  # event files of --tensorboard
REPORT = "report.html"
ONNX = "model.onnx"  # the default file of convlab export
ONNX_SUFFIX = ".onnx"

# A folder holding any of these is a finished run or variant: commands refuse to write over it.
RUN_MARKERS = (WEIGHTS, QUANTIZED_WEIGHTS, CONFIG)


def version_block() -> dict:
    """The block every saved config carries: which convlab wrote it."""
    return {"convlab": {"version": __version__}}
