"""Helpers for the fault tests: convlab in a child process that can be killed, interrupted or sabotaged."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

# A short run that draws from every RNG: shuffling, augmentation shifts, dropout, a per-batch schedule.
RUN_FLAGS = ["--data", "digits", "--model", "tiny-cnn", "--epochs", "3", "--batch-size", "64", "--augment", "light",
             "--dropout", "0.2", "--schedule", "onecycle", "--seed", "3", "--quiet", "--deterministic"]


def child_env(tmp_path: Path) -> dict:
    """One CPU thread (the same as the in-process reference run) and a private cache."""
    return dict(os.environ, OMP_NUM_THREADS="1", CONVLAB_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")


def convlab_command(*args: str, prelude: str = "") -> list[str]:
    """`python -m convlab ARGS`, optionally running `prelude` (Python source) in the child first."""
    code = f"{prelude}\nimport sys\nfrom convlab.cli import main\nsys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


def assert_same_weights(a: Path, b: Path) -> None:
    """Bit-identical tensors (the safetensors header's metadata order may differ between processes)."""
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and ta[name].shape == tb[name].shape, name
        assert ta[name].numpy().tobytes() == tb[name].numpy().tobytes(), f"{name} differs"


@pytest.fixture
def run_child(tmp_path):
    def run(*args: str, prelude: str = "", timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(convlab_command(*args, prelude=prelude), env=child_env(tmp_path), capture_output=True,
                              text=True, timeout=timeout)

    return run


@pytest.fixture
def write_cifar():
    """write_cifar(folder) -> {'batches': the cifar-10-batches-py folder of a tiny CIFAR-10 (20 train, 6 test)}."""
    import numpy as np

    from convlab.data.cifar import write_cifar10

    def write(folder: Path) -> dict:
        rng = np.random.default_rng(0)
        batches = write_cifar10(folder, rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), np.arange(20) % 10,
                                rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8), np.arange(6) % 10,
                                [f"class{i}" for i in range(10)])
        return {"batches": batches}

    return write
