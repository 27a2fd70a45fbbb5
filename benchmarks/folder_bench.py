"""Shared parts of the image-folder benchmarks (cifar10.py, peers.py): symlinked subsets, timed runs, scoring.

Kept apart so that both scripts build their folders, time their processes and score their predictions the same way;
it imports nothing from convlab, so the benchmark scripts run any convlab command a user would type.
"""
from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import time
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# The cifar10 recipe when `convlab datasets` cannot be read (kept equal to it by hand).
FALLBACK_RECIPE = ("--model resnet8 --optimizer sgd --lr 0.1 --momentum 0.9 --schedule onecycle --batch-size 128 "
                   "--augment standard --weight-decay 0.0005")


def class_files(split_dir: Path) -> dict[str, list[Path]]:
    """The images of each class subfolder of an image folder's split, sorted so a seed picks the same ones."""
    return {d.name: sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            for d in sorted(Path(split_dir).iterdir()) if d.is_dir()}


def link_files(files: dict[str, list[Path]], dst: Path) -> Path:
    """Symlink each class's files into dst/<class>/ (no copies: CIFAR-10 is 60,000 small files)."""
    for name, paths in files.items():
        (dst / name).mkdir(parents=True, exist_ok=True)
        for path in paths:
            (dst / name / path.name).symlink_to(path.resolve())
    return dst


def pick(files: dict[str, list[Path]], per_class: int | None, seed: int) -> dict[str, list[Path]]:
    """per_class files of each class drawn with seed (all of them when per_class is None or larger)."""
    rng = random.Random(seed)
    return {name: paths if not per_class or per_class >= len(paths) else sorted(rng.sample(paths, per_class))
            for name, paths in files.items()}


def limited_folder(data_dir: Path, dst: Path, per_class: int | None, seed: int) -> Path:
    """train/ and test/ with at most per_class images per class each: a quick smoke run on the real photos."""
    for split in ("train", "test"):
        link_files(pick(class_files(data_dir / split), per_class, seed), dst / split)
    return dst


def train_val_folder(train_dir: Path, dst: Path, val_fraction: float, seed: int) -> Path:
    """dst/train and dst/val: the same stratified hold-out for every peer (Ultralytics and fastai want a val/)."""
    train, val = {}, {}
    rng = random.Random(seed)
    for name, paths in class_files(train_dir).items():
        shuffled = paths[:]
        rng.shuffle(shuffled)
        cut = max(1, round(len(shuffled) * val_fraction))
        val[name], train[name] = sorted(shuffled[:cut]), sorted(shuffled[cut:])
    link_files(train, dst / "train")
    link_files(val, dst / "val")
    return dst


def score(predictions: Path, test_dir: Path) -> float:
    """Top-1 accuracy of a predictions file (JSON lines {"path", "label"}) on test_dir, the truth being each image's
    class folder. Every tool is scored by this one function; an image left unpredicted counts as wrong."""
    truth = {f"{name}/{path.name}": name for name, paths in class_files(test_dir).items() for path in paths}
    correct = 0
    for line in Path(predictions).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            key = "/".join(Path(row["path"]).parts[-2:])
            correct += truth.get(key) == row["label"]
    return correct / len(truth)


def thread_env(threads: int) -> dict[str, str]:
    """The environment every tool runs in: the same thread count for every math library, and no network."""
    n = str(threads)
    return {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def run_timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run cmd to the end and return its whole-process wall time; its output goes to log, whose tail is shown if it
    fails (a benchmark that hides a failure prints a wrong table)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        code = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"failed (exit {code}): {shlex.join(cmd)}\n{tail}\n(full log: {log})")
    return wall


def last_json(log: Path) -> dict:
    """The last JSON object line a runner printed (its epochs, training and prediction seconds)."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def time_to_accuracy(points: list[tuple[float, float]], target: float) -> str:
    """When a series of (wall s, accuracy) runs first reaches target: interpolated linearly between the last run
    below and the first at or above it. Each run is its own schedule, so this is an estimate between measured runs,
    and the text says which kind of answer it is."""
    points = sorted(points)
    if not points:
        return "not measured"
    for i, (wall, acc) in enumerate(points):
        if acc >= target:
            if i == 0:
                return f"<= {wall:.0f} s (the shortest run already reaches it)"
            w0, a0 = points[i - 1]
            at = w0 + (target - a0) / (acc - a0) * (wall - w0)
            return f"{at:.0f} s (interpolated between the {w0:.0f} s and {wall:.0f} s runs)"
    best = max(points, key=lambda p: p[1])
    return f"not reached in {points[-1][0]:.0f} s (best {best[1]:.4f} at {best[0]:.0f} s)"


def command_words(text: str) -> list[str]:
    """A command given as one option string ("convlab", "python -m convlab") as argv words."""
    return shlex.split(text)


def recipe_flags(convlab: list[str], dataset: str = "cifar10") -> str:
    """The dataset recipe's settings as train flags (epochs left out: the benchmark sets them), read from the line
    `convlab datasets` prints for it."""
    listing = subprocess.run([*convlab, "datasets"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        if line.split(" ", 1)[0] == dataset and "recipe:" in line:
            settings = line.split("recipe:", 1)[1].split(" -- ", 1)[0].split()
            pairs = [s.split("=", 1) for s in settings if "=" in s]
            return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in pairs if k not in ("epochs", "task"))
    return FALLBACK_RECIPE
