"""Time to accuracy on MNIST: convlab's default `mnist` recipe vs a plain PyTorch loop (and Keras).

Every contender runs as its own process, side by side in one invocation, so the wall times include
everything a user waits for: interpreter start, imports, data loading, training, evaluation and
(for convlab) writing the run folder. The plain loop (Conv16/Conv32+FC128, Adam 1e-3, batch 64,
DataLoader over a TensorDataset, 6 epochs) is written below and measures test accuracy after each
epoch, so its time to 98.0% is known per epoch; convlab's test accuracy is known when it ends.

    python benchmarks/time_to_accuracy.py --data-dir DIR [--seeds 3] [--quick]

DIR holds the MNIST IDX files (train-images-idx3-ubyte[.gz], ..., t10k-labels-idx1-ubyte[.gz]).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.98

PLAIN_LOOP = r'''
import gzip, json, sys, time
from pathlib import Path
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

def read_idx(folder, name):
    path = Path(folder) / name
    raw = path.read_bytes() if path.exists() else gzip.open(str(path) + ".gz").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)

folder, seed, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(seed)
def tensors(prefix):
    x = torch.from_numpy(read_idx(folder, f"{prefix}-images-idx3-ubyte").copy()).float().div(255).unsqueeze(1)
    y = torch.from_numpy(read_idx(folder, f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    return (x - 0.1307) / 0.3081, y
train_x, train_y = tensors("train")
test_x, test_y = tensors("t10k")
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                      nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
loss_fn = nn.CrossEntropyLoss()
loader = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True)
trained = 0.0
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
    trained += time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    print(json.dumps({"epoch": epoch, "accuracy": accuracy, "train_seconds": trained, "time": time.time()}),
          flush=True)
'''

KERAS_CONVNET = r'''
import gzip, json, sys, time
from pathlib import Path
import numpy as np
import keras

def read_idx(folder, name):
    path = Path(folder) / name
    raw = path.read_bytes() if path.exists() else gzip.open(str(path) + ".gz").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)

folder, seed, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
keras.utils.set_random_seed(seed)
train_x = read_idx(folder, "train-images-idx3-ubyte")[..., None].astype("float32") / 255
train_y = read_idx(folder, "train-labels-idx1-ubyte")
test_x = read_idx(folder, "t10k-images-idx3-ubyte")[..., None].astype("float32") / 255
test_y = read_idx(folder, "t10k-labels-idx1-ubyte")
model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                          keras.layers.MaxPooling2D(2), keras.layers.Conv2D(64, 3, activation="relu"),
                          keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dropout(0.5),
                          keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
trained = 0.0
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    model.fit(train_x, train_y, batch_size=128, epochs=1, verbose=0)
    trained += time.perf_counter() - start
    accuracy = float(model.evaluate(test_x, test_y, verbose=0)[1])
    print(json.dumps({"epoch": epoch, "accuracy": accuracy, "train_seconds": trained, "time": time.time()}),
          flush=True)
'''


def run_epochs_script(source: str, data_dir: str, seed: int, epochs: int) -> dict:
    """Run a per-epoch script; time to TARGET is measured from the process start."""
    started = time.time()
    proc = subprocess.run([sys.executable, "-c", source, data_dir, str(seed), str(epochs)], capture_output=True,
                          text=True)
    whole = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(f"baseline failed:\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    hit = next((r for r in rows if r["accuracy"] >= TARGET), None)
    return {"whole_s": whole, "to_target_s": hit["time"] - started if hit else None,
            "train_to_target_s": hit["train_seconds"] if hit else None, "accuracy": rows[-1]["accuracy"],
            "best_accuracy": max(r["accuracy"] for r in rows), "train_s": rows[-1]["train_seconds"]}


def run_convlab(data_dir: str, seed: int, extra: list[str], src: str | None = None) -> dict:
    """convlab train as a user runs it; its test accuracy is known when the process ends. `src`: another
    checkout's src folder to run instead (PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": src} if src else None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "convlab", "train", "--data", "mnist", "--data-dir", data_dir,
                               "--seed", str(seed), "--quiet", "--out", str(out), *extra],
                              capture_output=True, text=True, env=env)
        whole = time.time() - started
        if proc.returncode != 0:
            raise SystemExit(f"convlab failed:\n{proc.stderr[-2000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
    hit = metrics["accuracy"] >= TARGET
    return {"whole_s": whole, "to_target_s": whole if hit else None,
            "train_to_target_s": metrics["train_seconds"] if hit else None, "accuracy": metrics["accuracy"],
            "best_accuracy": metrics["accuracy"], "train_s": metrics["train_seconds"]}


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec=".1f", unit=""):
    return "never" if value is None else format(value, spec) + unit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per contender (default: 3)")
    parser.add_argument("--long-flags",
                        default="--epochs 24 --augment light --dropout 0.2 --batch-size 128 --lr 0.004",
                        help="convlab flags for the best-accuracy-within-60-s row (\"\" leaves it out)")
    parser.add_argument("--baseline-src", metavar="SRC", help="also run the recipe with another checkout's src "
                        "folder (e.g. the previous commit's), interleaved with this one")
    parser.add_argument("--quick", action="store_true", help="one seed, plain loop 2 epochs, no 60 s row")
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    plain_epochs = 2 if args.quick else 6

    contenders = {"plain PyTorch loop": lambda s: run_epochs_script(PLAIN_LOOP, args.data_dir, s, plain_epochs),
                  "convlab (mnist recipe)": lambda s: run_convlab(args.data_dir, s, [])}
    if args.baseline_src:
        contenders["convlab (mnist recipe), --baseline-src code"] = lambda s: run_convlab(args.data_dir, s, [],
                                                                                          args.baseline_src)
    if not args.quick and args.long_flags:  # --long-flags "" leaves the row out
        contenders[f"convlab {args.long_flags}"] = lambda s: run_convlab(args.data_dir, s, args.long_flags.split())
    if importlib.util.find_spec("tensorflow") is not None:
        contenders["Keras convnet"] = lambda s: run_epochs_script(KERAS_CONVNET, args.data_dir, s, 15)
    else:
        print("tensorflow is not installed: the Keras row is skipped")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load:.2f} on {os.cpu_count()} cores")
    results: dict[str, list[dict]] = {name: [] for name in contenders}
    for seed in seeds:  # interleaved, so a change in machine load hits every contender alike
        for name, run in contenders.items():
            results[name].append(run(seed))
            r = results[name][-1]
            print(f"  seed {seed} {name}: whole {r['whole_s']:.1f}s, to {TARGET:.0%} {fmt(r['to_target_s'], unit='s')}, "
                  f"accuracy {r['accuracy']:.4f}", flush=True)

    base = results["plain PyTorch loop"]
    base_whole, base_to = median([r["whole_s"] for r in base]), median([r["to_target_s"] for r in base])
    print(f"\nmedians over {len(seeds)} seed(s); ratios are convlab / plain loop (lower is faster)\n")
    print("| contender | whole process s | process start to 98.0% s | training to 98.0% s | final accuracy "
          "| whole / plain whole | to 98% / plain to 98% |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rows in results.items():
        whole, to = median([r["whole_s"] for r in rows]), median([r["to_target_s"] for r in rows])
        train_to = median([r["train_to_target_s"] for r in rows])
        acc = median([r["accuracy"] for r in rows])
        ratio_whole = whole / base_whole
        ratio_to = fmt(to / base_to, ".2f") if to is not None and base_to else "n/a"
        print(f"| {name} | {whole:.1f} | {fmt(to)} | {fmt(train_to)} | {acc:.4f} | {ratio_whole:.2f} | {ratio_to} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
