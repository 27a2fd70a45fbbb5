"""Where convlab's start-up goes, for `convlab train`, `convlab predict RUN one.png` and `convlab eval RUN`.

Each command runs as its own process, N times, for this checkout and (with --baseline) for another
checkout's src/ folder, interleaved so a change in machine load hits both alike. A run is timed twice:
plain (its wall clock, "whole process") and under `python -X importtime` (where that run's imports go:
torch, torch._dynamo, everything else imported; the rest of that run is the interpreter's start and the
command's own work). Each column is a median over the runs, so the columns need not add up exactly.

    python benchmarks/startup.py [--baseline OTHER_CHECKOUT/src] [--repeats 5]

The run that predict and eval read is a tiny-cnn digits run trained once by each checkout (a run folder
of newer code may hold settings older code does not know); train is
`convlab train --data digits --model tiny-cnn --epochs 1`.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def imports(stderr: str) -> dict[str, float]:
    """Seconds of all imports, of torch's and of torch._dynamo's (cumulative, from -X importtime)."""
    total = torch = dynamo = 0.0
    for match in LINE.finditer(stderr):
        cumulative, indent, name = int(match.group(2)) / 1e6, len(match.group(3)), match.group(4)
        if indent == 1:  # "| " then two spaces per level
            total += cumulative
        if name == "torch":
            torch = max(torch, cumulative)
        elif name == "torch._dynamo":
            dynamo = max(dynamo, cumulative)
    return {"imports": total, "torch": torch, "dynamo": dynamo}


def timed(src: Path, args: list[str], cwd: Path, importtime: bool) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    flags = ["-X", "importtime"] if importtime else []
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *flags, "-m", "convlab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"convlab {' '.join(args)} failed ({src}):\n{proc.stderr[-2000:]}")
    return wall, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout's src/ folder, timed side by side")
    parser.add_argument("--repeats", type=int, default=5, help="runs per command and tree (default: 5)")
    args = parser.parse_args()
    trees = {"this checkout": HERE, **({"baseline": args.baseline.resolve()} if args.baseline else {})}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train = ["train", "--data", "digits", "--model", "tiny-cnn", "--epochs", "1", "--quiet"]
        runs = {tree: f"run-{k}" for k, tree in enumerate(trees)}  # each code reads a run folder it wrote itself
        for tree, src in trees.items():
            timed(src, [*train, "--out", str(tmp / runs[tree])], tmp, False)
        sys.path.insert(0, str(HERE))
        from PIL import Image

        from convlab import load_run

        Image.fromarray(load_run(tmp / runs["this checkout"]).test_data().images[0, 0]).save(tmp / "one.png")
        commands = {"train": lambda i, run: [*train, "--out", str(tmp / f"t{i}")],
                    "predict RUN one.png": lambda i, run: ["predict", run, "one.png"],
                    "eval RUN": lambda i, run: ["eval", run]}
        rows: dict[tuple[str, str], list[dict]] = {(c, t): [] for c in commands for t in trees}
        count = 0
        for _ in range(args.repeats):
            for command, make in commands.items():
                for tree, src in trees.items():  # interleaved: tree after tree, command after command
                    count += 1
                    wall, _ = timed(src, make(count, runs[tree]), tmp, False)
                    traced, stderr = timed(src, make(count + 10_000, runs[tree]), tmp, True)
                    parts = imports(stderr)
                    rows[(command, tree)].append({"wall": wall, **parts, "other": parts["imports"] - parts["torch"]
                                                  - parts["dynamo"], "rest": traced - parts["imports"],
                                                  "traced": traced})
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    print(f"medians of {args.repeats} runs, seconds; load average at end {load:.2f} on {os.cpu_count()} cores\n")
    print("| command | code | whole process | under -X importtime: whole | import torch | import torch._dynamo | "
          "other imports | interpreter start + work |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (command, tree), runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "traced", "torch", "dynamo", "other", "rest")}
        print(f"| {command} | {tree} | {med['wall']:.2f} | {med['traced']:.2f} | {med['torch']:.2f} | "
              f"{med['dynamo']:.2f} | {med['other']:.2f} | {med['rest']:.2f} |")
    if args.baseline:
        print()
        for command in commands:
            ours = statistics.median(r["wall"] for r in rows[(command, "this checkout")])
            theirs = statistics.median(r["wall"] for r in rows[(command, "baseline")])
            print(f"{command}: this checkout / baseline = {ours / theirs:.2f} ({ours:.2f}s vs {theirs:.2f}s)")


if __name__ == "__main__":
    main()
