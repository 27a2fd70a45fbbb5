"""Imbalanced folders: the plain cross-entropy against --class-weights auto and --sampler balanced, on digits cut 10:1.

scikit-learn's 8x8 digits written as an image folder: 30 images per class held out as test/ (balanced, so every
class's recall is measured on the same number of images), and of the rest classes 0-4 keep all their images
(~150) while classes 5-9 keep a tenth (~15). Each setting trains the imagefolder recipe (small-cnn, 15 epochs) on
one thread, once per seed, each run its own process; the table shows the mean over the seeds (min-max) of the
test balanced accuracy, the recall of the five rare classes, macro F1, and the wall time of the whole process.

    python benchmarks/imbalanced.py [--seeds 3] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

SETTINGS = {"plain cross-entropy": [], "--class-weights auto": ["--class-weights", "auto"],
            "--sampler balanced": ["--sampler", "balanced"]}
RARE = range(5, 10)
TEST_PER_CLASS = 30


def write_folder(root: Path) -> dict[int, int]:
    """The 10:1 folder; returns the training images per class."""
    digits = load_digits()
    rng = np.random.default_rng(0)
    counts = {}
    for label in range(10):
        rows = rng.permutation(np.flatnonzero(digits.target == label))
        test, train = rows[:TEST_PER_CLASS], rows[TEST_PER_CLASS:]
        if label in RARE:
            train = train[:len(train) // 10]
        counts[label] = len(train)
        for split, chosen in (("train", train), ("test", test)):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = (digits.images[i] * 16).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return counts


def command(root: Path, flags: list[str], seed: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "convlab", "train", "--data", f"imagefolder:{root}", "--image-size", "8",
            "--threads", "1", "--quiet", "--seed", str(seed), *flags, "--out", str(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", help="keep the folder and the runs here (default: a temporary folder)")
    args = parser.parse_args()
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="convlab-imbalanced-"))
    counts = write_folder(base / "digits-10to1")
    print(f"training images per class: {counts}; test: {TEST_PER_CLASS} per class")
    rows = []
    for name, flags in SETTINGS.items():
        results = []
        for seed in range(args.seeds):
            out = base / "runs" / f"{name.strip('-').replace(' ', '-')}-{seed}"
            started = time.perf_counter()
            subprocess.run(command(base / "digits-10to1", flags, seed, out), check=True, capture_output=True,
                           env={**os.environ})
            seconds = time.perf_counter() - started
            metrics = json.loads((out / "metrics.json").read_text())
            rare = np.mean([metrics["per_class"][str(c)]["recall"] for c in RARE])
            results.append((metrics["balanced_accuracy"], rare, metrics["macro_f1"], seconds))
        rows.append((name, np.array(results)))
    print(f"\n{'setting':<22} {'balanced accuracy':>22} {'rare-class recall':>22} {'macro F1':>8} {'wall s':>7}")
    for name, r in rows:
        spread = [f"{r[:, i].mean():.3f} ({r[:, i].min():.3f}-{r[:, i].max():.3f})" for i in (0, 1)]
        print(f"{name:<22} {spread[0]:>22} {spread[1]:>22} {r[:, 2].mean():>8.3f} {r[:, 3].mean():>7.1f}")
    print(f"\ncommand per row: python {' '.join(command(Path('DIR'), ['FLAGS'], 0, Path('OUT'))[1:])}")


if __name__ == "__main__":
    main()
