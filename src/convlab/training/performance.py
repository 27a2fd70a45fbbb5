"""Speed settings of a run: CPU threads, memory format, mixed precision (AMP) and torch.compile."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConvlabError


def busy_cores(window: float = 0.1, stat: Path = Path("/proc/stat")) -> float | None:
    """How many cores other processes keep busy now, measured over `window` seconds; None where unknown.

    Read from the kernel's CPU counters rather than the 1-minute load average, which still counts a
    process that ended seconds ago: back-to-back runs would each have given themselves 1 thread of 2.
    """
    try:
        before = _cpu_times(stat)
        time.sleep(window)
        after = _cpu_times(stat)
    except (OSError, ValueError, IndexError):
        return None
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # the idle and iowait columns
    cores = os.cpu_count() or 1
    return cores * (1.0 - idle / total) if total > 0 else 0.0


def _cpu_times(stat: Path) -> list[int]:
    """The aggregate 'cpu' line of /proc/stat: user nice system idle iowait irq softirq steal (ticks)."""
    first = stat.read_text().splitlines()[0].split()
    if first[0] != "cpu":
        raise ValueError(f"{stat}: no aggregate cpu line")
    return [int(value) for value in first[1:9]]


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """Threads for a CPU run: the cores the other processes leave idle, at least 1.

    torch's default is one thread per core. On a busy machine its threads wait for each other at
    every kernel: measured on 2 cores with a load of 7, a mnist-cnn step ran 5x faster on 1 thread.
    `load` is the busy cores (measured now by busy_cores, else the 1-minute load average).
    """
    cores = cores or os.cpu_count() or 1
    if load is None:
        load = busy_cores()
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's processes on this machine share it
    return max(1, min(cores, round(cores - load)) // processes)


def set_threads(threads: int, device: torch.device) -> int:
    """Intra-op threads for CPU kernels: `threads`, or auto_threads() for 0. Returns the number set."""
    if threads == 0 and device.type != "cpu":
        return torch.get_num_threads()  # the GPU does the work; keep torch's default for the host side
    count = threads or auto_threads()
    torch.set_num_threads(count)
    return count


def use_channels_last(setting: str, model: nn.Module, device: torch.device) -> bool:
    """Whether to run the model in channels_last (NHWC) memory format.

    auto: yes for models with 2-d convolutions. Measured on a 2-core CPU, NHWC max-pooling is ~8x
    faster than NCHW and a mnist-cnn training step ~2x faster; on CUDA it lets tensor cores run convs.
    """
    if setting == "off":
        return False
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return setting == "on" or (has_conv and device.type in ("cpu", "cuda"))


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --amp, or None for full float32.

    auto: on CUDA, bfloat16 where the GPU supports it, else float16 (with a gradient scaler);
    off elsewhere, because CPU autocast is slower than float32 for these small convnets.
    """
    if setting == "off":
        return None
    if setting == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and setting == "fp16":
        raise ConvlabError("--amp fp16 needs a GPU; on the CPU use --amp bf16 or --amp off")
    return torch.bfloat16 if setting == "bf16" else torch.float16


@dataclass
class Precision:
    """Runs the forward pass under autocast and steps the optimizer, with a GradScaler for float16."""

    device_type: str
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def for_run(cls, setting: str, device: torch.device) -> "Precision":
        dtype = amp_dtype(setting, device)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(device.type, dtype, scaler)

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, clip_grad: float = 0.0) -> None:
        """zero_grad, backward and step: one batch, one optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        self.step(optimizer, clip_grad)

    def backward(self, loss: torch.Tensor) -> None:
        """Add the gradients of `loss` to those already there; float16 losses are scaled so small gradients do
        not vanish."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip_grad: float = 0.0, divide_by: float = 1) -> None:
        """Step the optimizer on the gradients summed so far: divided by `divide_by` first (an accumulated sum
        of per-image losses becomes their mean), then their global L2 norm clipped to `clip_grad` (0: off).

        Under float16 both act on the true gradients, so the GradScaler's scale is taken out first; a step
        whose gradients overflowed is still skipped by the scaler."""
        if clip_grad or divide_by != 1:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if divide_by != 1:
                for param in params:
                    param.grad.div_(divide_by)
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(params, clip_grad)
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    @property
    def label(self) -> str:
        return {None: "float32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile the model when asked; the returned module shares the original's parameters."""
    if not enabled:
        return model
    return torch.compile(model)
