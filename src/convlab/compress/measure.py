"""What a model variant costs: file size, weight sparsity and latency per image on this machine."""
from __future__ import annotations

import gzip
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

MB = 1_000_000  # sizes are reported in megabytes of 10^6 bytes


def file_size(path: Path) -> int:
    """Bytes of the file that holds the weights (what you ship)."""
    return Path(path).stat().st_size


def gzip_size(path: Path) -> int:
    """Bytes of the same file after gzip -9: zeros left by pruning compress, dense floats barely do."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every float convolution and fully connected layer: the weights pruning acts on."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return [(name, module) for name, module in model.named_modules() if type(module) in kinds]


def weight_sparsity(model: nn.Module) -> float | None:
    """Share of exact zeros among the conv and linear weights (None when the model has no float ones)."""
    layers = prunable_weights(model)
    total = sum(module.weight.numel() for _, module in layers)
    if not total:
        return None
    zeros = sum(int((module.weight == 0).sum()) for _, module in layers)
    return zeros / total


def time_per_image(call: Callable[[], object], batch_size: int, min_seconds: float = 0.3, warmup: int = 3,
                   min_repeats: int = 10) -> float:
    """Fastest wall time of `call()` over repeats (after warm-up), in milliseconds per image.

    The fastest, not the mean or median: on a shared machine the slower calls measure the other
    processes (a long batch is preempted more often than a short one), not the model.
    """
    for _ in range(warmup):
        call()
    best = float("inf")
    repeats = 0
    started = time.perf_counter()
    while repeats < min_repeats or time.perf_counter() - started < min_seconds:
        tick = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - tick)
        repeats += 1
    return best / batch_size * 1000.0


def latency_images(channels: int, size: list[int], count: int = 64, seed: int = 0) -> np.ndarray:
    """(count, C, H, W) uint8 inputs for timing; dense models take the same time whatever the pixels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, channels, *size), dtype=np.uint8)


def torch_call(model: nn.Module, inputs: torch.Tensor) -> Callable[[], object]:
    model.eval()

    def call():
        with torch.inference_mode():
            return model(inputs)

    return call


@contextmanager
def torch_threads(threads: int):
    """Run PyTorch on `threads` CPU threads (0: leave its default), then restore the previous count."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# each task's timed input: (its image size from preprocess, (N, C, H, W) uint8 -> what its model takes)
LATENCY_INPUTS = {
    "classify": (lambda pre: pre.size, lambda run, batch: run.preprocess.norm.apply(torch.from_numpy(batch))),
    "multilabel": (lambda pre: pre.size, lambda run, batch: run.preprocess.norm.apply(torch.from_numpy(batch))),
    # a detector takes a list of (3, H, W) images in [0, 1], post-processing included
    "detect": (lambda pre: [pre.side] * 2, lambda run, batch: list(torch.from_numpy(batch).float().div(255))),
    "segment": (lambda pre: [pre.side] * 2,
                lambda run, batch: torch.stack([run.tensor(image.transpose(1, 2, 0), 255) for image in batch])),
}


def measure_latency(run, batch_sizes: tuple[int, ...] = (1, 64), min_seconds: float = 0.3,
                    threads: int = 1) -> dict[str, float]:
    """Milliseconds per image at each batch size, for a Run (PyTorch, CPU), an OnnxRun (onnxruntime), a
    DetectionRun or a SegmentationRun (square images of its side).

    One thread by default: on a shared or busy machine, multi-threaded timings of small models
    measure the other processes more than the model.
    """
    from ..tasks import task_of  # lazy: start-up time

    size_of, model_input = LATENCY_INPUTS[task_of(run.config).name]
    images = latency_images(run.preprocess.channels, size_of(run.preprocess), max(batch_sizes))
    result = {}
    with torch_threads(threads):
        for batch_size in batch_sizes:
            batch = images[:batch_size]
            if hasattr(run, "session_call"):  # an exported ONNX model: timed through onnxruntime
                call = run.session_call(batch, threads)
            else:
                call = torch_call(run.model.cpu(), model_input(run, batch))
            result[f"batch_{batch_size}"] = round(time_per_image(call, batch_size, min_seconds), 5)
    return result


def cost_metrics(run, weights: Path, min_seconds: float = 0.3, with_sparsity: bool = True, threads: int = 1) -> dict:
    """Size, sparsity (of float weights) and latency of a variant, as saved in its metrics.json."""
    metrics = {"weights_file": Path(weights).name, "size_bytes": file_size(weights),
               "size_mb": round(file_size(weights) / MB, 4), "gzip_mb": round(gzip_size(weights) / MB, 4)}
    model = getattr(run, "model", None)
    if with_sparsity and isinstance(model, nn.Module):
        sparsity = weight_sparsity(model)
        if sparsity is not None:
            metrics["sparsity"] = round(sparsity, 6)
    metrics["latency_ms_per_image"] = measure_latency(run, min_seconds=min_seconds, threads=threads)
    metrics["latency_threads"] = threads or torch.get_num_threads()
    return metrics
