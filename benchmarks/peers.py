"""convlab against the tools users would pick instead (fastai, Ultralytics, timm), same folder, same wall-time budget.

Two rows per tool, each time-boxed to --minutes (a comma-separated ladder measures accuracy against time):
  scratch   CIFAR-10 from scratch at 32 px: convlab's cifar10 recipe; fastai's Learner on its xresnet18 with
            fit_one_cycle and aug_transforms; `yolo classify train` on the n-size classifier from its yaml;
            timm's --timm-model with timm's RandAugment + mixup/cutmix recipe in a plain loop.
  finetune  the given ImageNet MobileNetV2 weights on --finetune-per-class images per class, at --finetune-size:
            `convlab finetune --from torchvision:mobilenet_v2 --weights FILE --recipe photo`; fastai's vision_learner
            + fine_tune;
            Ultralytics' own TorchVision backbone module (mobilenet_v2, the same weights staged offline) with its
            Classify head; the timm loop on torchvision's MobileNetV2 with those weights.
Every peer runs as its own process with --peer-python (convlab never imports them), offline, with --threads threads.
convlab, fastai and timm get the number of epochs that fits the budget from a timed calibration run of the same
command (fastai and timm also stop inside the tool when the budget is spent); Ultralytics gets its own `time=`
argument (it re-plans its epochs after each one). Every tool then writes its top-1 prediction for every test image
and this script scores all of them with one function (folder_bench.score).

    python benchmarks/peers.py DATA_DIR --weights FILE --peer-python PY [--minutes 10] [--threads 2]
    python benchmarks/peers.py DATA_DIR --weights FILE --peer-python PY --minutes 0.5 --limit-per-class 20 \\
        --threads 1                                                                    # smoke run
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

from folder_bench import (class_files, command_words, last_json, limited_folder, link_files, pick, recipe_flags,
                          run_timed, score, thread_env, time_to_accuracy, train_val_folder)

HERE = Path(__file__).resolve().parent
# Ultralytics' TorchVision module: torchvision's mobilenet_v2 unwrapped, its classifier dropped (1280 channels out),
# then Ultralytics' own Classify head; DEFAULT weights are read from $TORCH_HOME, where the kit's are staged.
YOLO_MOBILENET_YAML = """nc: {classes}
backbone:
  - [-1, 1, TorchVision, [1280, mobilenet_v2, DEFAULT, True, 1]]
head:
  - [-1, 1, Classify, [nc]]
"""


@dataclass
class Row:
    """One benchmark row's data and settings, shared by every tool."""
    name: str
    convlab_dir: Path     # imagefolder: train/ + test/ (convlab holds out its own 10% for validation)
    peer_root: Path       # train/ + val/ (the same 10% held out, for the peers that want a val/ folder)
    test_dir: Path
    size: int
    batch_size: int


@dataclass
class Bench:
    """The command-line settings and the work folder every tool's function reads."""
    args: argparse.Namespace
    work: Path
    convlab: list[str]

    @property
    def env(self) -> dict[str, str]:
        return thread_env(self.args.threads)


# -- calibration: the epochs that fit the budget -------------------------------------------------------------------

def fitted_epochs(calibration: dict, budget_s: float, minimum: int) -> tuple[int, str]:
    """Epochs that fit budget_s, from a calibration run: (budget - fixed overhead) / seconds per epoch, where the
    overhead (start-up, loading, final evaluation) is the calibration's wall time minus its training. A tool that
    reports its last epoch's seconds (convlab) is fitted with those: a fine-tune's first, frozen epoch is cheaper
    than the ones that train the whole network, and the mean of the two gave convlab 50% too many epochs."""
    per_epoch = calibration.get("epoch_s") or calibration["train_s"] / max(calibration["epochs_run"], 1)
    overhead = calibration["wall_s"] - calibration["train_s"]
    epochs = max(minimum, math.floor((budget_s - overhead) / per_epoch))
    return epochs, f"epochs fitted from a {calibration['epochs_run']}-epoch run ({per_epoch:.0f} s/epoch, " \
                   f"{overhead:.0f} s overhead)"


def calibrated(bench: Bench, row: Row, budget_s: float, launch, calibration_epochs: int) -> dict:
    """Run launch once for calibration_epochs (not counted) and once with the epochs that fit the budget."""
    calibration = launch(calibration_epochs, None, "calibration")
    epochs, how = fitted_epochs(calibration, budget_s, calibration_epochs if row.name == "finetune" else 1)
    result = launch(epochs, budget_s, "run")
    result["timebox"] = how + ("; then stopped by the budget inside the tool" if result.get("budget_stopped") else "")
    return result


# -- the tools -----------------------------------------------------------------------------------------------------

def run_convlab(bench: Bench, row: Row, budget_s: float) -> dict:
    """`convlab train` (scratch) or `convlab finetune` (finetune) at the calibrated epochs, then `convlab predict`."""
    args = bench.args

    def launch(epochs: int, _budget, tag: str) -> dict:
        out = bench.work / f"convlab-{row.name}-{int(budget_s)}s-{tag}"
        if row.name == "scratch":
            cmd = [*bench.convlab, "train", "--data", f"imagefolder:{row.convlab_dir}", "--image-size", "32",
                   *shlex.split(args.convlab_args)]
        else:
            cmd = [*bench.convlab, "finetune", "--from", "torchvision:mobilenet_v2", "--weights", str(args.weights),
                   "--data", f"imagefolder:{row.convlab_dir}", "--image-size", str(row.size),
                   "--batch-size", str(row.batch_size), *shlex.split(args.convlab_finetune_args)]
        cmd += ["--epochs", str(epochs), "--threads", str(args.threads), "--seed", str(args.seed), "--quiet",
                "--out", str(out)]
        wall = run_timed(cmd, bench.env, out.with_suffix(".log"))
        metrics = json.loads((out / "metrics.json").read_text())
        with open(out / "metrics.csv", newline="") as rows:
            last_epoch = list(csv.DictReader(rows))[-1]
        # convlab's test evaluation is the prediction pass over test/ that the others make outside their wall time
        result = {"wall_s": wall - metrics["test_seconds"], "train_s": metrics["train_seconds"],
                  "epoch_s": float(last_epoch["seconds"]), "test_s": metrics["test_seconds"],
                  "epochs_run": metrics["epochs_run"], "command": shlex.join(cmd)}
        if tag == "run":
            result["predictions"] = convlab_predictions(bench, out, row.test_dir)
        return result

    return calibrated(bench, row, budget_s, launch, 1 if row.name == "scratch" else 2)


def convlab_predictions(bench: Bench, run_dir: Path, test_dir: Path) -> Path:
    """`convlab predict RUN TEST --json --top-k 1`, rewritten as the shared JSON-lines predictions file."""
    cmd = [*bench.convlab, "predict", str(run_dir), str(test_dir), "--json", "--top-k", "1"]
    proc = subprocess.run(cmd, env=bench.env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\n{proc.stderr[-2000:]}")
    path = run_dir.with_suffix(".predictions.jsonl")
    with open(path, "w") as out:
        for item in json.loads(proc.stdout):
            out.write(json.dumps({"path": item["path"], "label": item["top"][0]["label"]}) + "\n")
    return path


def runner_tool(script: str, extra: Callable) -> Callable:
    """A tool whose row is one of the runner scripts beside this one (peer_fastai.py, peer_timm.py), run by the
    peers' Python; extra(bench, row, epochs) gives its tool-specific flags and the epochs it is told to run."""

    def run(bench: Bench, row: Row, budget_s: float) -> dict:
        args = bench.args

        def launch(epochs: int, budget, tag: str) -> dict:
            stem = bench.work / f"{Path(script).stem}-{row.name}-{int(budget_s)}s-{tag}"
            flags, told = extra(bench, row, epochs)
            cmd = [args.peer_python, str(HERE / script), "--root", str(row.peer_root), "--test", str(row.test_dir),
                   "--mode", row.name, "--size", str(row.size), "--batch-size", str(row.batch_size),
                   "--epochs", str(told), "--threads", str(args.threads), "--workers", str(args.workers),
                   "--seed", str(args.seed), *flags]
            if budget is not None:
                cmd += ["--budget-s", f"{budget:.0f}", "--predictions", str(stem.with_suffix(".predictions.jsonl"))]
            wall = run_timed(cmd, bench.env, stem.with_suffix(".log"))
            result = {**last_json(stem.with_suffix(".log")), "command": shlex.join(cmd)}
            result["wall_s"] = wall - result["predict_s"]  # the others predict in a separate process
            if budget is not None:
                result["predictions"] = stem.with_suffix(".predictions.jsonl")
            return result

        calibration_epochs = 2 if (row.name == "finetune" and script == "peer_fastai.py") else 1
        return calibrated(bench, row, budget_s, launch, calibration_epochs)

    return run


def fastai_flags(bench: Bench, row: Row, epochs: int) -> tuple[list[str], int]:
    """fine_tune(N) runs one frozen epoch and N unfrozen ones: N = the fitted total minus one."""
    flags = ["--weights", str(bench.args.weights)] if row.name == "finetune" else []
    return flags, max(1, epochs - 1) if row.name == "finetune" else epochs


def timm_flags(bench: Bench, row: Row, epochs: int) -> tuple[list[str], int]:
    """The timm model by name from scratch; the MobileNetV2 weights file when fine-tuning."""
    flags = ["--model", bench.args.timm_model] if row.name == "scratch" else ["--weights", str(bench.args.weights)]
    return flags, epochs


def run_ultralytics(bench: Bench, row: Row, budget_s: float) -> dict:
    """`yolo classify train` with time=budget hours (Ultralytics' own time-box), then YOLO's predictor on test/."""
    args = bench.args
    name = f"{row.name}-{int(budget_s)}s"
    env = {**bench.env, "YOLO_CONFIG_DIR": str(bench.work / "yolo-config")}
    if row.name == "scratch":
        model, pretrained = args.yolo_model, "False"
    else:
        model, pretrained = str(bench.work / "yolo-mobilenet_v2-cls.yaml"), "True"
        Path(model).write_text(YOLO_MOBILENET_YAML.format(classes=len(class_files(row.test_dir))))
        env["TORCH_HOME"] = str(bench.work / "torch-home")
        run_timed([args.peer_python, str(HERE / "peer_yolo.py"), "stage-weights", str(args.weights),
                   env["TORCH_HOME"]], env, bench.work / "yolo-stage.log")
    cmd = [*yolo_command(args.peer_python), "classify", "train", f"data={row.peer_root}", f"model={model}",
           f"imgsz={row.size}", "epochs=100", f"time={budget_s / 3600:.6f}", f"batch={row.batch_size}",
           f"workers={args.workers}", "device=cpu", f"pretrained={pretrained}", "amp=False", "plots=False",
           f"seed={args.seed}", f"project={bench.work / 'yolo'}", f"name={name}", "exist_ok=True"]
    wall = run_timed(cmd, env, bench.work / f"yolo-{name}.log")
    run_dir = bench.work / "yolo" / name
    predictions = bench.work / f"yolo-{name}.predictions.jsonl"
    run_timed([args.peer_python, str(HERE / "peer_yolo.py"), "predict", str(run_dir / "weights" / "best.pt"),
               str(row.test_dir), str(row.size), str(predictions)], env, bench.work / f"yolo-{name}-predict.log")
    epochs = max(0, len((run_dir / "results.csv").read_text().splitlines()) - 1)
    shown = "YOLO_OFFLINE=1 " + (f"TORCH_HOME={env['TORCH_HOME']} " if row.name == "finetune" else "")
    return {"wall_s": wall, "epochs_run": epochs, "command": shown + shlex.join(cmd), "predictions": predictions,
            "timebox": f"Ultralytics' time={budget_s / 3600:.4f} h ({epochs} epochs; start-up and final validation "
                       "not counted by it)"}


def yolo_command(peer_python: str) -> list[str]:
    """The `yolo` entry point installed beside the peers' Python (or Ultralytics' entrypoint through it)."""
    beside = Path(peer_python).parent / "yolo"
    found = beside if beside.exists() else shutil.which("yolo")
    return [str(found)] if found else [peer_python, "-c", "from ultralytics.cfg import entrypoint; entrypoint()"]


TOOLS = {
    "convlab": run_convlab,
    "fastai": runner_tool("peer_fastai.py", fastai_flags),
    "ultralytics": run_ultralytics,
    "timm": runner_tool("peer_timm.py", timm_flags),
}
PACKAGES = {"fastai": "fastai", "ultralytics": "ultralytics", "timm": "timm"}


def versions(bench: Bench) -> dict[str, str]:
    """Each tool's version as its own Python reports it (convlab's through the interpreter running it)."""
    found = {}
    for tool, package in PACKAGES.items():
        proc = subprocess.run([bench.args.peer_python, "-c", f"import {package}; print({package}.__version__)"],
                              capture_output=True, text=True, env=bench.env)
        found[tool] = proc.stdout.strip() or "not installed"
    python = bench.convlab[0] if bench.convlab[1:3] == ["-m", "convlab"] else sys_python_of(bench.convlab[0])
    proc = subprocess.run([python, "-c", "from convlab.version import __version__; print(__version__)"],
                          capture_output=True, text=True, env=bench.env) if python else None
    found["convlab"] = proc.stdout.strip() if proc and proc.returncode == 0 else "?"
    return found


def sys_python_of(command: str) -> str | None:
    """The interpreter named in an entry-point script's #! line (the `convlab` command's own Python)."""
    path = shutil.which(command)
    if not path:
        return None
    first = Path(path).read_bytes()[:200].split(b"\n", 1)[0].decode(errors="ignore")
    return first[2:].strip() if first.startswith("#!") else None


# -- data and report -----------------------------------------------------------------------------------------------

def build_rows(args: argparse.Namespace, work: Path) -> dict[str, Row]:
    """The folders each row reads, as symlinks: the (limited) data, the peers' train/val split, the fine-tune subset."""
    data = args.data_dir.resolve()
    if args.limit_per_class:
        data = limited_folder(data, work / "data", args.limit_per_class, args.seed)
    test = data / "test"
    finetune = work / "finetune"
    link_files(pick(class_files(data / "train"), args.finetune_per_class, args.seed), finetune / "train")
    link_files(class_files(test), finetune / "test")
    return {
        "scratch": Row("scratch", data, train_val_folder(data / "train", work / "split", 0.1, args.seed), test, 32,
                       args.batch_size),
        "finetune": Row("finetune", finetune, train_val_folder(finetune / "train", work / "finetune-split", 0.1,
                                                                args.seed), test, args.finetune_size,
                        args.finetune_batch_size),
    }


def print_report(results: list[dict], found: dict[str, str]) -> None:
    """The markdown table (tool, version, row, budget, wall, accuracy, command) and the time to convlab's accuracy."""
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    print("| tool | version | row | budget s | wall s | epochs | test accuracy | time-box | command |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for r in results:
        print(f"| {r['tool']} | {found[r['tool']]} | {r['row']} | {r['budget_s']:.0f} | {r['wall_s']:.1f} | "
              f"{r['epochs_run']} | {r['accuracy']:.4f} | {r['timebox']} | `{r['command']}` |")
    print("\nwall s: the training process from start to exit (start-up, data, training, the tool's own final "
          "evaluation); the prediction pass on test/ scored here is not counted (for convlab: its test evaluation, "
          "metrics.json's test_seconds, is that pass and is taken off).\n")
    print("time to convlab's accuracy (at its largest budget), interpolated over this run's budgets:\n")
    print("| row | convlab accuracy | tool | time to reach it |")
    print("| --- | ---: | --- | --- |")
    for row in dict.fromkeys(r["row"] for r in results):
        ours = [r for r in results if r["row"] == row and r["tool"] == "convlab"]
        if not ours:
            continue
        target = max(ours, key=lambda r: r["budget_s"])["accuracy"]
        for tool in dict.fromkeys(r["tool"] for r in results if r["row"] == row and r["tool"] != "convlab"):
            points = [(r["wall_s"], r["accuracy"]) for r in results if r["row"] == row and r["tool"] == tool]
            print(f"| {row} | {target:.4f} | {tool} | {time_to_accuracy(points, target)} |")
    print("\n(a ladder of budgets, e.g. --minutes 5,10,20,40, turns 'not reached' into a measured time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("data_dir", type=Path, help="image folder with train/ and test/ (CIFAR-10 from the kit)")
    parser.add_argument("--weights", type=Path, required=True, help="ImageNet MobileNetV2 weights (.safetensors, "
                        "torchvision's keys) for the finetune row")
    parser.add_argument("--minutes", default="10", help="wall-time budget per run; a comma-separated ladder too")
    parser.add_argument("--finetune-minutes", help="budget(s) for the finetune row (default: --minutes)")
    parser.add_argument("--peer-python", default="python", help="the Python with fastai, ultralytics and timm")
    parser.add_argument("--convlab", default="convlab", help='the convlab command (e.g. "python -m convlab")')
    parser.add_argument("--convlab-args", help="convlab's scratch flags (default: the cifar10 recipe's)")
    parser.add_argument("--convlab-finetune-args", default="--recipe photo", help="convlab's finetune flags "
                        "(default: the photo recipe; \"\" for the folder recipe)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, from {', '.join(TOOLS)}")
    parser.add_argument("--rows", default="scratch,finetune")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for every tool")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers for the peers that have them")
    parser.add_argument("--batch-size", type=int, default=128, help="scratch row, every tool (convlab's recipe: 128)")
    parser.add_argument("--finetune-batch-size", type=int, default=32, help="finetune row, every tool")
    parser.add_argument("--finetune-size", type=int, default=96, help="finetune row image size (multiple of 32)")
    parser.add_argument("--finetune-per-class", type=int, default=100)
    parser.add_argument("--timm-model", default="resnet18", help="timm model for the scratch row")
    parser.add_argument("--yolo-model", default="yolo11n-cls.yaml", help="Ultralytics classifier yaml (n size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-per-class", type=int, help="smoke runs: at most N train and N test images a class")
    parser.add_argument("--keep", type=Path, help="keep the folders, logs and run folders here")
    args = parser.parse_args()
    bench_convlab = command_words(args.convlab)
    if args.convlab_args is None:
        args.convlab_args = recipe_flags(bench_convlab)
    budgets = {"scratch": [float(m) * 60 for m in args.minutes.split(",")],
               "finetune": [float(m) * 60 for m in (args.finetune_minutes or args.minutes).split(",")]}

    with tempfile.TemporaryDirectory(prefix="peers-bench-") as tmp:
        work = (args.keep or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(args, work, bench_convlab)
        rows = build_rows(args, work)
        found = versions(bench)
        print(f"versions: {found}; convlab scratch flags: {args.convlab_args}", flush=True)
        results = []
        for row_name in args.rows.split(","):
            for budget_s in budgets[row_name]:
                for tool in args.tools.split(","):
                    result = TOOLS[tool](bench, rows[row_name], budget_s)
                    result.update(tool=tool, row=row_name, budget_s=budget_s,
                                  accuracy=score(result["predictions"], rows[row_name].test_dir))
                    results.append(result)
                    print(f"  {row_name} {tool} {budget_s:.0f} s: wall {result['wall_s']:.1f} s, "
                          f"test accuracy {result['accuracy']:.4f}", flush=True)
        print_report(results, found)


if __name__ == "__main__":
    main()
