"""Predict throughput and latency of a run folder at batch 1 and batch 64.

Images are random uint8 arrays of the run's size and channels, so only the model path is timed
(normalization, forward pass, softmax, copy back), as `Run.predict_arrays` does it. Each batch
size is timed over repeated calls after warm-up; latency is per call.

    python benchmarks/predict_throughput.py RUN_DIR [--seconds 3] [--quick]

The baseline row is the same model called as a plain module under torch.no_grad: the
ratio shows what convlab's inference path costs or saves around the bare forward pass.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch


def time_calls(call, seconds: float) -> list[float]:
    for _ in range(3):
        call()
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default: 3)")
    parser.add_argument("--quick", action="store_true", help="0.5 s per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: the idle cores)")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else args.seconds

    from convlab.run import load_run
    from convlab.training.performance import set_threads

    set_threads(args.threads, torch.device("cpu"))

    run = load_run(args.run_dir)
    model, pre = run.model, run.preprocess
    mean = torch.tensor(pre.mean).view(1, -1, 1, 1)
    std = torch.tensor(pre.std).view(1, -1, 1, 1)
    print(f"{run.path}: model {run.config.model.name}, input {pre.channels}x{pre.size[0]}x{pre.size[1]}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("\n| batch | path | median latency ms | p90 latency ms | images/s | ratio to plain |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    rng = np.random.default_rng(0)
    for batch in (1, 64):
        images = rng.integers(0, 256, (batch, pre.channels, *pre.size), dtype=np.uint8)

        def plain():
            with torch.no_grad():
                x = (torch.from_numpy(images).float() / 255 - mean) / std
                return torch.softmax(model(x), 1).numpy()

        rows = {"plain module": time_calls(plain, seconds),
                "Run.predict_arrays": time_calls(lambda: run.predict_arrays(images), seconds)}
        base = batch / statistics.median(rows["plain module"])
        for name, times in rows.items():
            med = statistics.median(times)
            p90 = sorted(times)[int(0.9 * (len(times) - 1))]
            rate = batch / med
            print(f"| {batch} | {name} | {med * 1e3:.2f} | {p90 * 1e3:.2f} | {rate:,.0f} | {rate / base:.2f}x |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
