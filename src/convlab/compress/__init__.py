"""Compress and ship trained runs: pruning, int8 quantization, distillation, ONNX export, comparison."""
from .compare import compare, plot_comparison
from .distill import distill
from .export import export_onnx, load_onnx
from .prune import prune_run
from .quantize import load_quantized, quantize_run
from .load import load_variant

__all__ = ["compare", "distill", "export_onnx", "load_onnx", "load_quantized", "load_variant", "plot_comparison",
           "prune_run", "quantize_run"]
