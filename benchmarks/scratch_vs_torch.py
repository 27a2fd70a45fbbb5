"""Scratch (NumPy) engine vs torch on the texts' layer shapes and one mnist-cnn epoch: times and ratios.

Both engines run in this one process, on the same CPU threads (--threads sets OpenBLAS's and torch's),
on the same inputs and weights. Each layer time is forward + backward (input and parameter gradients),
the median of --repeats runs after a warm-up. The epoch is 8,000 random 28x28 images, batch 64, Adam.

    python benchmarks/scratch_vs_torch.py [--threads N] [--repeats N] [--images N]
"""
from __future__ import annotations

import argparse
import os
import sys


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads for both engines (default: all cores)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per layer (default: 20)")
    parser.add_argument("--images", type=int, default=8000, help="images in the epoch (default: 8000)")
    return parser.parse_args()


ARGS = parse_args()
# BLAS reads its thread count when NumPy is first imported, so set it before that import.
for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(ARGS.threads)

import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from convlab import scratch  # noqa: E402
from convlab.models.registry import create_model  # noqa: E402
from convlab.models.to_scratch import to_scratch  # noqa: E402
from convlab.training.scratch_engine import skip_input_gradient, train_step  # noqa: E402


def median_seconds(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def layer_case(name: str, layer: nn.Module, shape: tuple[int, ...], repeats: int) -> tuple[str, float, float]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    twin = to_scratch(layer)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    dy = torch.from_numpy(rng.standard_normal(tuple(layer(x_torch).shape)).astype(np.float32))

    def torch_step():
        layer.zero_grad()
        x_torch.grad = None
        layer(x_torch).backward(dy)

    dy_np = dy.numpy()

    def scratch_step():
        twin.zero_grad()
        twin(x)
        twin.backward(dy_np)

    return name, median_seconds(torch_step, repeats), median_seconds(scratch_step, repeats)


def epoch_case(n_images: int) -> tuple[str, float, float]:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n_images, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, n_images)
    torch.manual_seed(0)
    model = create_model("mnist-cnn", 1, 10, (28, 28))
    twin = skip_input_gradient(to_scratch(model))
    batches = [(images[i:i + 64], labels[i:i + 64]) for i in range(0, n_images, 64)]

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    started = time.perf_counter()
    for x, y in batches:
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch_seconds = time.perf_counter() - started

    s_optimizer = scratch.optim.Adam(list(twin.parameters()), lr=1e-3)
    s_loss = scratch.nn.CrossEntropyLoss()
    twin.train()
    started = time.perf_counter()
    for x, y in batches:
        train_step(twin, s_loss, s_optimizer, x, y)
    scratch_seconds = time.perf_counter() - started
    return f"mnist-cnn epoch, {n_images} images 28x28, batch 64, Adam", torch_seconds, scratch_seconds


def main() -> None:
    torch.set_num_threads(ARGS.threads)
    torch.manual_seed(0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"threads: {ARGS.threads} (torch.set_num_threads and OPENBLAS_NUM_THREADS), torch {torch.__version__}, "
          f"numpy {np.__version__}, load average {load:.2f}")
    rows = [
        layer_case("Conv2d 1->32 3x3 on 64x1x28x28", nn.Conv2d(1, 32, 3), (64, 1, 28, 28), ARGS.repeats),
        layer_case("Conv2d 32->64 3x3 on 64x32x13x13", nn.Conv2d(32, 64, 3), (64, 32, 13, 13), ARGS.repeats),
        layer_case("MaxPool2d 2 on 64x32x26x26", nn.MaxPool2d(2), (64, 32, 26, 26), ARGS.repeats),
        layer_case("Linear 1600->10 on 64x1600", nn.Linear(1600, 10), (64, 1600), ARGS.repeats),
    ]
    rows.append(epoch_case(ARGS.images))
    targets = [3, 3, 3, 3, 4]
    print(f"{'case (forward + backward)':<54} {'torch ms':>10} {'scratch ms':>11} {'ratio':>7} {'target':>7}")
    for (name, t_torch, t_scratch), target in zip(rows, targets):
        ratio = t_scratch / t_torch
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{name:<54} {t_torch * 1e3:>10.2f} {t_scratch * 1e3:>11.2f} {ratio:>6.2f}x {'<=' + str(target) + 'x':>7}"
              f"  {verdict}")


if __name__ == "__main__":
    main()
