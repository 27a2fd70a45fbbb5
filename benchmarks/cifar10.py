"""CIFAR-10 from scratch on this CPU: convlab's test accuracy against whole-process wall time, and time to 85%/90%.

Each epoch budget is its own `convlab train` run on the image folder (imagefolder:DATA_DIR, --image-size 32), timed
from process start to exit (start-up, decoding the JPEGs, training, the test evaluation, the run folder), its test
accuracy read from the run's metrics.json. The recipe flags default to the `cifar10` dataset recipe as
`convlab datasets` prints it, so the benchmark follows the recipe when it changes.

    python benchmarks/cifar10.py DATA_DIR [--epochs 5,10,15,30] [--threads 2] [--convlab "convlab"]
    python benchmarks/cifar10.py DATA_DIR --epochs 1,2 --limit-per-class 100 --threads 1   # smoke run

DATA_DIR holds train/<class>/*.jpg and test/<class>/*.jpg (the kit's CIFAR-10 folder).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
from pathlib import Path

from folder_bench import command_words, limited_folder, recipe_flags, run_timed, thread_env, time_to_accuracy

TARGETS = (0.85, 0.90)
def train_once(convlab: list[str], data_dir: Path, epochs: int, flags: str, threads: int, seed: int,
               out: Path) -> dict:
    """One `convlab train` run: its whole-process wall time and the test accuracy in its metrics.json."""
    cmd = [*convlab, "train", "--data", f"imagefolder:{data_dir}", "--image-size", "32", *shlex.split(flags),
           "--epochs", str(epochs), "--threads", str(threads), "--seed", str(seed), "--quiet", "--out", str(out)]
    wall = run_timed(cmd, thread_env(threads), out.with_suffix(".log"))
    metrics = json.loads((out / "metrics.json").read_text())
    return {"epochs": epochs, "wall_s": wall, "accuracy": metrics["accuracy"], "train_s": metrics["train_seconds"],
            "command": shlex.join(cmd)}


def print_table(rows: list[dict]) -> None:
    """The markdown table (one row per run, the command beside it) and the times to each target."""
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    print("| epochs | wall s (whole process) | training s | test accuracy | command |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['epochs']} | {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['accuracy']:.4f} | `{r['command']}` |")
    print()
    points = [(r["wall_s"], r["accuracy"]) for r in rows]
    for target in TARGETS:
        print(f"- time to {target:.0%}: {time_to_accuracy(points, target)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="image folder with train/ and test/ (CIFAR-10 from the kit)")
    parser.add_argument("--epochs", default="5,10,15,30", help="comma-separated epoch budgets, one run each")
    parser.add_argument("--convlab", default="convlab", help='the convlab command (e.g. "python -m convlab")')
    parser.add_argument("--convlab-args", help="recipe flags for every run (default: the cifar10 recipe's, read "
                        "from `convlab datasets`)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-per-class", type=int, help="smoke runs: a symlinked subset with at most N train "
                        "and N test images per class")
    parser.add_argument("--keep", type=Path, help="keep the run folders and logs here (default: a temp folder)")
    args = parser.parse_args()

    convlab = command_words(args.convlab)
    flags = args.convlab_args if args.convlab_args is not None else recipe_flags(convlab)
    budgets = [int(e) for e in args.epochs.split(",")]
    with tempfile.TemporaryDirectory(prefix="cifar10-bench-") as tmp:
        work = args.keep or Path(tmp)
        data_dir = args.data_dir.resolve()
        if args.limit_per_class:
            data_dir = limited_folder(data_dir, work / "subset", args.limit_per_class, args.seed)
        print(f"recipe flags: {flags}")
        rows = []
        for epochs in budgets:
            rows.append(train_once(convlab, data_dir, epochs, flags, args.threads, args.seed,
                                   work / f"run-{epochs}ep"))
            r = rows[-1]
            print(f"  {epochs} epochs: {r['wall_s']:.1f} s, test accuracy {r['accuracy']:.4f}", flush=True)
        print_table(rows)


if __name__ == "__main__":
    main()
