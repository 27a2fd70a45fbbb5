"""GPU verification: every fast path of convlab trained, timed and loaded back, in one table.

On CUDA it trains (synthetic data, so it needs no download):

- resnet18 at 224x224 on an image folder of random-pattern JPEGs, and
- the CIFAR-10 recipe (its model, optimizer and schedule) on CIFAR-shaped data written in CIFAR's format,

each with --amp off, bf16 and fp16, --channels-last off and on, and with and without --compile; then DDP
with NCCL on every GPU present (torchrun --standalone --nproc_per_node=gpu); it times predict latency
(one image, median of 50) on the GPU, and checks that each run folder loads and predicts on the CPU with
the same top-1 classes. It prints one table and is sized to finish within 10 minutes on one GPU.

    python benchmarks/gpu_check.py                      # CUDA, the full matrix
    python benchmarks/gpu_check.py --device cpu --quick # anywhere: shows the script works (CPU paths only)

Columns: train img/s is the last epoch's images per second (the first epoch includes warm-up and, with
--compile, compilation); predict ms is the median latency of one image on the training device; cpu load
says whether the folder loaded on the CPU and gave the device's top-1 class for every test image.
"""
from __future__ import annotations

import argparse
import csv
import io
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

import convlab
from convlab.data.cifar import write_cifar10

SRC = Path(__file__).resolve().parents[1] / "src"


def write_image_folder(root: Path, count: int, size: int, classes: int = 10) -> Path:
    """Random class patterns plus noise as JPEGs: a learnable task of realistic file sizes."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (classes, 8, 8, 3), dtype=np.uint8)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pattern = np.asarray(Image.fromarray(base[i % classes]).resize((size, size), Image.Resampling.BILINEAR))
        noisy = np.clip(pattern.astype(np.int64) + rng.integers(-40, 40, pattern.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def write_cifar_shaped(root: Path, train: int, test: int) -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (10, 3, 32, 32))

    def images(n):
        labels = np.arange(n) % 10
        noisy = base[labels] + rng.integers(-60, 60, (n, 3, 32, 32))
        return np.clip(noisy, 0, 255).astype(np.uint8), labels

    (xtr, ytr), (xte, yte) = images(train), images(test)
    return write_cifar10(root, xtr, ytr, xte, yte, [f"class{i}" for i in range(10)]).parent


def workloads(scratch: Path, quick: bool) -> dict[str, dict]:
    """name -> the convlab.train keywords of that workload (its data written under `scratch`)."""
    folder = write_image_folder(scratch / "folder", 200 if quick else 2560, 64 if quick else 256)
    cifar = write_cifar_shaped(scratch / "cifar", 500 if quick else 10000, 100 if quick else 2000)
    size = 32 if quick else 224
    return {f"resnet18 {size}px": dict(data=f"imagefolder:{folder}", model="resnet18", image_size=size,
                                       batch_size=32 if quick else 128, epochs=2),
            "cifar10 recipe": dict(data="cifar10", data_dir=str(cifar), epochs=2, train_per_class=0)}


def settings(device: str, quick: bool) -> list[dict]:
    amps = ["off", "bf16"] + ([] if device == "cpu" else ["fp16"])
    compiles = [False] if quick else [False, True]
    return [dict(amp=amp, channels_last=layout, compile=compiled)
            for amp, layout, compiled in itertools.product(amps, ["off", "on"], compiles)]


def last_epoch_rate(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv") as handle:
        return float(list(csv.DictReader(handle))[-1]["images_per_second"])


def predict_ms(run, images: np.ndarray, repeats: int = 50) -> float:
    run.predict_arrays(images[:1])  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run.predict_arrays(images[:1])
        if run.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def cpu_check(run, images: np.ndarray) -> str:
    """Load the folder on the CPU and compare its top-1 classes with the training device's."""
    on_cpu = convlab.load_run(run.path, device="cpu")
    same = (on_cpu.predict_arrays(images).argmax(1) == run.predict_arrays(images).argmax(1)).mean()
    return "ok" if same == 1.0 else f"{same:.1%} same top-1"


def train_row(name: str, keywords: dict, setting: dict, device: str, out: Path) -> dict:
    started = time.perf_counter()
    run = convlab.train(console=Console(file=io.StringIO()), out=str(out), device=device, quiet=True,
                        **keywords, **setting)
    test = run.test_data().images[:256]
    return {"workload": name, **setting, "train img/s": f"{last_epoch_rate(out):,.0f}",
            "seconds": f"{time.perf_counter() - started:.1f}", "test acc": f"{run.metrics['accuracy']:.3f}",
            "predict ms": f"{predict_ms(run, test):.2f}", "cpu load": cpu_check(run, test)}


def ddp_row(name: str, keywords: dict, device: str, out: Path) -> dict:
    """The same workload under torchrun: NCCL on every GPU, or two gloo processes on the CPU."""
    processes = "gpu" if device == "cuda" else "2"
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in keywords.items()]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "convlab", "train", *flags, f"--device={device}", "--quiet", f"--out={out}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"workload": name, "amp": "ddp", "train img/s": "FAILED", "cpu load": done.stderr.strip()[-200:]}
    run = convlab.load_run(out, device=device)
    test = run.test_data().images[:256]
    count = torch.cuda.device_count() if device == "cuda" else 2
    return {"workload": name, "amp": f"ddp x{count}", "channels_last": "auto", "compile": False,
            "train img/s": f"{last_epoch_rate(out):,.0f}", "seconds": f"{time.perf_counter() - started:.1f}",
            "test acc": f"{run.metrics['accuracy']:.3f}", "predict ms": f"{predict_ms(run, test):.2f}",
            "cpu load": cpu_check(run, test)}


def print_table(rows: list[dict]) -> None:
    columns = ["workload", "amp", "channels_last", "compile", "train img/s", "seconds", "test acc", "predict ms",
               "cpu load"]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="small data and no --compile: a smoke run")
    parser.add_argument("--budget-s", type=float, default=540, help="skip what is left after this many seconds")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here; run with --device cpu --quick to check the script itself")
    print(f"torch {torch.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPUs)" if args.device == "cuda" else ""))
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        scratch = Path(scratch)
        jobs = workloads(scratch, args.quick)
        for index, (name, keywords) in enumerate(jobs.items()):
            for number, setting in enumerate(settings(args.device, args.quick)):
                if time.perf_counter() - started > args.budget_s:
                    rows.append({"workload": name, **setting, "train img/s": "skipped (time budget)"})
                    continue
                rows.append(train_row(name, keywords, setting, args.device, scratch / f"run-{index}-{number}"))
            rows.append(ddp_row(name, keywords, args.device, scratch / f"ddp-{index}"))
    print_table(rows)
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
