"""`convlab eval` and `convlab predict`: using a trained run."""
from __future__ import annotations

import argparse
import json

from ..errors import ConvlabError


def add_commands(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="metrics of a run on its test split or on other data",
                        description="Evaluate a run folder on its test split, or on --data/--data-dir.")
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, a compressed variant folder or a .onnx file")
    ev.add_argument("--data", metavar="NAME", help="evaluate on this dataset's test split instead")
    ev.add_argument("--data-dir", metavar="DIR", help="folder with that dataset's files")
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON document")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="classify images with a run",
                        description="Classify image files or folders of images with a trained run.")
    pr.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, a compressed variant folder or a .onnx file")
    pr.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    pr.add_argument("--top-k", type=int, default=5, metavar="K", help="how many classes to show (default: 5)")
    pr.add_argument("--json", action="store_true", help='print [{"path", "top": [{"label", "prob"}]}] as JSON')
    pr.set_defaults(func=cmd_predict)


def set_cpu_threads() -> None:
    """As training does: torch threads on the idle cores only (a busy machine slows extra threads)."""
    import torch

    from ..training.performance import set_threads  # lazy: start-up time

    set_threads(0, torch.device("cpu"))


def cmd_eval(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..compress.load import load_variant  # lazy: start-up time

    set_cpu_threads()
    run = load_variant(args.run_dir)
    metrics = run.evaluate(data=args.data, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(metrics, indent=1, ensure_ascii=False))
        return 0
    console = Console(highlight=False, soft_wrap=True)
    for warning in metrics.get("warnings", []):
        console.print(f"warning: {warning}", markup=False)
    head = f"accuracy {metrics['accuracy']:.4f}"
    if "top5_accuracy" in metrics:
        head += f"  top-5 {metrics['top5_accuracy']:.4f}"
    head += f"  macro P/R/F1 {metrics['macro_precision']:.4f}/{metrics['macro_recall']:.4f}/{metrics['macro_f1']:.4f}"
    console.print(f"{run.path}: {head}  ({metrics['num_samples']} images)", markup=False)
    table = Table("class", "precision", "recall", "f1", "support")
    for label, row in metrics["per_class"].items():
        table.add_row(label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]))
    console.print(table)
    return 0


def cmd_predict(args) -> int:
    from ..compress.load import load_variant  # lazy: start-up time

    if args.top_k < 1:
        raise ConvlabError(f"--top-k must be at least 1, got {args.top_k}")
    set_cpu_threads()
    run = load_variant(args.run_dir)
    results = run.predict(args.paths, top_k=args.top_k)
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
        return 0
    for result in results:
        tops = "  ".join(f"{t['label']} {t['prob']:.3f}" for t in result["top"])
        print(f"{result['path']}: {tops}")
    return 0
