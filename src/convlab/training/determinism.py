"""--deterministic: deterministic kernels, fixed threads and no autotuning, for bit-identical runs."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch


@contextlib.contextmanager
def deterministic_mode(enabled: bool, threads: int | None = None) -> Iterator[None]:
    """Within the block, torch uses only deterministic algorithms and a fixed number of CPU threads.

    The settings are process-wide, so they are put back on exit (a Python caller's later work is
    unaffected). cuBLAS needs CUBLAS_WORKSPACE_CONFIG before its first use to be deterministic.
    """
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.get_num_threads())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.set_num_threads(threads or torch.get_num_threads())
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]
        torch.set_num_threads(saved[3])
