"""Does fine-tuning need less data and time than training from scratch? Measured on real digits.

Pretrain a model on one task (digits 0-4), then learn another (digits 5-9) from 10 or 50 labels per
class: by fine-tuning the pretrained model with each strategy, and by training the same architecture
from scratch on the same labels for the same number of epochs. Prints, per label count, the test
accuracy (mean and spread over the seeds) and the training time of each, as a Markdown table.

    python benchmarks/transfer.py --data-dir DIR            # DIR holds the MNIST IDX files
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

import convlab

STRATEGIES = ["linear-probe", "two-stage", "gradual", "full"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, metavar="DIR", help="folder with the dataset's files")
    parser.add_argument("--data", default="mnist", help="dataset (default: mnist)")
    parser.add_argument("--model", default="mnist-cnn", help="architecture for both sides (default: mnist-cnn)")
    parser.add_argument("--source-classes", default="0,1,2,3,4", help="the pretraining task's classes")
    parser.add_argument("--target-classes", default="5,6,7,8,9", help="the new task's classes")
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 50], help="labels per class to try")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per setting (default: 3)")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12, help="epochs for every method on the new task")
    parser.add_argument("--head-epochs", type=int, default=3, help="two-stage: head-only epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    quiet = Console(file=io.StringIO())  # the runs' own output is not the point here
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        source = convlab.train(data=args.data, data_dir=args.data_dir, classes=args.source_classes,
                               model=args.model, epochs=args.pretrain_epochs, out=str(tmp / "source"), quiet=True,
                               console=quiet)
        pretrain_seconds = time.perf_counter() - started
        print(f"pretrained {args.model} on {args.data} classes {args.source_classes}: "
              f"{source.metrics['num_samples']} test images, accuracy {source.metrics['accuracy']:.4f}, "
              f"{source.metrics['train_seconds']:.1f}s training", flush=True)

        common = dict(data=args.data, data_dir=args.data_dir, classes=args.target_classes, epochs=args.epochs,
                      batch_size=args.batch_size, val_fraction=0.0, quiet=True, console=quiet)
        results: dict[tuple[int, str], list[tuple[float, float]]] = {}
        for labels in args.labels:
            for seed in range(args.seeds):
                for method in ["scratch"] + STRATEGIES:
                    out = str(tmp / f"{labels}-{seed}-{method}")
                    if method == "scratch":
                        run = convlab.train(model=args.model, train_per_class=labels, seed=seed, out=out, **common)
                    else:
                        run = convlab.finetune(source.path, strategy=method, head_epochs=args.head_epochs,
                                               train_per_class=labels, seed=seed, out=out, **common)
                    results.setdefault((labels, method), []).append((run.metrics["accuracy"],
                                                                     run.metrics["train_seconds"]))
                    print(f"  {labels:>3} labels/class  seed {seed}  {method:<12} accuracy "
                          f"{run.metrics['accuracy']:.4f}  {run.metrics['train_seconds']:.2f}s", flush=True)

    print()
    print(f"Pretraining ({args.model}, classes {args.source_classes}, {args.pretrain_epochs} epochs): "
          f"{pretrain_seconds:.1f}s wall, once. Target: classes {args.target_classes}, {args.epochs} epochs "
          f"for every method, batch {args.batch_size}, {args.seeds} seeds, test accuracy on "
          f"{run.metrics['num_samples']} test images. load average {os.getloadavg()[0]:.1f}.")
    print()
    print("| labels/class | method | test accuracy (mean ± sd) | min-max | train time (mean) | vs scratch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for labels in args.labels:
        base = statistics.mean(a for a, _ in results[(labels, "scratch")])
        for method in ["scratch"] + STRATEGIES:
            accs = [a for a, _ in results[(labels, method)]]
            secs = [s for _, s in results[(labels, method)]]
            mean = statistics.mean(accs)
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            delta = "baseline" if method == "scratch" else f"{mean - base:+.4f}"
            print(f"| {labels} | {method} | {mean:.4f} ± {sd:.4f} | {min(accs):.4f}-{max(accs):.4f} | "
                  f"{statistics.mean(secs):.2f}s | {delta} |")


if __name__ == "__main__":
    main()
