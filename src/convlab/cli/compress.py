"""`convlab compress prune|quantize`, `convlab distill`, `convlab export` and `convlab compare`."""
from __future__ import annotations

import argparse
import json

from .common import Parser, add_config_flags, config_keys


def add_commands(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("compress", help="prune or quantize a run into a smaller variant folder",
                           description="Make a smaller or faster variant of a trained run. Each writes a "
                                       "run-like folder with its size, accuracy and latency in metrics.json.")
    group.set_defaults(func=lambda args: (group.print_help(), 2)[1])
    tools = group.add_subparsers(dest="tool", metavar="TOOL", parser_class=Parser)

    pr = tools.add_parser("prune", help="magnitude pruning (global weights or conv channels)",
                          description="Zero the smallest weights of a run (torch.nn.utils.prune), optionally "
                                      "fine-tune, make the masks permanent and report sparsity, size and "
                                      "accuracy before and after.")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("--amount", type=float, default=0.5, metavar="X",
                    help="share of weights (or of each conv's channels with --structured) to zero (default: 0.5)")
    pr.add_argument("--structured", action="store_true",
                    help="prune whole output channels of each convolution (L2 norm) instead of single weights")
    pr.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                    help="train the pruned model N more epochs with the masks in place (default: 0)")
    pr.add_argument("--lr", type=float, default=None, metavar="X",
                    help="fine-tuning learning rate, constant (default: the run's lr / 10)")
    pr.add_argument("--data-dir", metavar="DIR", help="where the run's dataset files are, if moved")
    pr.add_argument("--out", required=True, metavar="DIR", help="folder for the pruned variant")
    pr.add_argument("--quiet", action="store_true", help="plain lines instead of progress bars")
    pr.set_defaults(func=cmd_prune)

    qu = tools.add_parser("quantize", help="int8 post-training quantization (dynamic or static)",
                          description="Quantize a run to int8 with PyTorch's quantization (dynamic: Linear layers; "
                                      "static: convolutions and Linear layers, calibrated on training images) and "
                                      "report size, latency and accuracy.")
    qu.add_argument("run_dir", metavar="RUN_DIR")
    qu.add_argument("--mode", choices=("dynamic", "static"), default="dynamic", help="(default: dynamic)")
    qu.add_argument("--calibration-images", type=int, default=512, metavar="N",
                    help="training images run through the model to set activation ranges (static; default: 512)")
    qu.add_argument("--engine", default=None, metavar="NAME",
                    help="int8 kernel engine: x86, fbgemm, onednn or qnnpack (default: PyTorch's for this CPU)")
    qu.add_argument("--data-dir", metavar="DIR", help="where the run's dataset files are, if moved")
    qu.add_argument("--out", required=True, metavar="DIR", help="folder for the int8 variant")
    qu.set_defaults(func=cmd_quantize)

    di = sub.add_parser("distill", help="train a student model from a teacher run (knowledge distillation)",
                        description="Train --student on the teacher's softened outputs and the labels: "
                                    "loss = alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * cross-entropy. "
                                    "Data defaults to the teacher's; every 'convlab train' flag applies.")
    di.add_argument("--teacher", required=True, metavar="RUN_DIR", help="the trained run to learn from")
    di.add_argument("--student", dest="model", metavar="NAME",
                    help="the student model (same as --model; default: the dataset recipe's model)")
    di.add_argument("--temperature", type=float, default=4.0, metavar="T", help="softening temperature (default: 4)")
    di.add_argument("--alpha", type=float, default=0.7, metavar="A",
                    help="weight of the distillation term; 1 - A weighs the cross-entropy (default: 0.7)")
    di.add_argument("--config", metavar="FILE.yaml", help="YAML settings applied before the flags")
    add_config_flags(di)
    di.set_defaults(func=cmd_distill)

    ex = sub.add_parser("export", help="export a run to ONNX, checked with onnxruntime",
                        description="Export a run to ONNX with labels and preprocessing in the metadata (a "
                                    "classifier: a free batch size; a detector: one image per call, boxes, labels "
                                    "and scores out; a segmenter: logits per pixel, free batch, height and width "
                                    "where the model allows); the file is kept only if onnxruntime matches "
                                    "PyTorch.")
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--format", choices=("onnx",), default="onnx", help="(default: onnx)")
    ex.add_argument("--opset", type=int, metavar="N",
                    help="ONNX opset version (default: 18 for a classifier or a segmenter, 17 for a detector)")
    ex.add_argument("--out", metavar="FILE", help="output file (default: RUN_DIR/model.onnx)")
    ex.add_argument("--tolerance", type=float, metavar="X",
                    help="largest allowed |onnxruntime - PyTorch| on a classifier's or a segmenter's logits "
                         "(default: 1e-4), on a detector's box corners in pixels and scores (default: 1e-3)")
    ex.set_defaults(func=cmd_export)

    co = sub.add_parser("compare", help="size, accuracy and latency of runs and their variants",
                        description="Evaluate runs, variant folders and .onnx files, each on its run's test split "
                                    "(or all on --data's), and time them here (batch 1 and 64); print one table "
                                    "and save a bar chart.")
    co.add_argument("paths", metavar="RUN_DIR", nargs="+", help="run folders, variant folders or .onnx files")
    co.add_argument("--data", metavar="NAME", help="evaluate every model on this dataset's test split (default: each run's own)")
    co.add_argument("--data-dir", metavar="DIR", help="folder with that dataset's files")
    co.add_argument("--chart", default="compare.png", metavar="FILE.png", help="bar chart (default: compare.png)")
    co.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    co.add_argument("--markdown", action="store_true", help="print the table as Markdown instead")
    co.add_argument("--seconds", type=float, default=0.5, metavar="S",
                    help="time each model at least S seconds per batch size (default: 0.5)")
    co.add_argument("--threads", type=int, default=1, metavar="N",
                    help="CPU threads for the timings, PyTorch and onnxruntime alike (0: all; default: 1)")
    co.set_defaults(func=cmd_compare)


def cmd_prune(args) -> int:
    from ..compress.prune import prune_run  # lazy: start-up time

    prune_run(args.run_dir, args.out, amount=args.amount, structured=args.structured,
              finetune_epochs=args.finetune_epochs, lr=args.lr, data_dir=args.data_dir, quiet=args.quiet)
    return 0


def cmd_quantize(args) -> int:
    from ..compress.quantize import quantize_run  # lazy: start-up time

    quantize_run(args.run_dir, args.out, mode=args.mode, calibration_images=args.calibration_images,
                 engine=args.engine, data_dir=args.data_dir)
    return 0


def cmd_distill(args) -> int:
    from ..compress.distill import distill  # lazy: start-up time

    overrides = {key: getattr(args, key) for key in config_keys()}
    distill(args.teacher, temperature=args.temperature, alpha=args.alpha, config=args.config, **overrides)
    return 0


def cmd_export(args) -> int:
    from ..compress.export import export_onnx  # lazy: start-up time
    from ..compress.export_detection import export_detector_onnx  # lazy: start-up time
    from ..compress.export_segmentation import export_segmenter_onnx  # lazy: start-up time
    from ..compress.load import load_variant  # lazy: start-up time
    from ..tasks import task_of  # lazy: start-up time

    run = load_variant(args.run_dir, command="export")
    # each task's exporter and its default opset (a detector's: torch.onnx's TorchScript exporter, <= 20)
    export, opset = {"classify": (export_onnx, 18), "multilabel": (export_onnx, 18),
                     "detect": (export_detector_onnx, 17), "segment": (export_segmenter_onnx, 18)}[
        task_of(run.config).name]
    given = {"tolerance": args.tolerance} if args.tolerance is not None else {}
    export(run, args.out, opset=opset if args.opset is None else args.opset, **given)
    return 0


def cmd_compare(args) -> int:
    from pathlib import Path

    from rich.console import Console

    # lazy: start-up time
    from ..compress.compare import compare, comparison_table, markdown_table, plot_comparison
    from ..errors import ConvlabError  # lazy: start-up time

    if not args.seconds > 0:
        raise ConvlabError(f"--seconds must be > 0, got {args.seconds}")
    if args.threads < 0:
        raise ConvlabError(f"--threads must be >= 0, got {args.threads}")
    rows = compare(args.paths, data=args.data, data_dir=args.data_dir, latency_seconds=args.seconds,
                   threads=args.threads)
    console = Console(highlight=False)
    if not console.is_terminal:  # a pipe or a file: room for every column rather than 80 characters
        console = Console(highlight=False, width=160)
    if args.markdown:
        print(markdown_table(rows))
    else:
        console.print(comparison_table(rows))
    plot_comparison(rows, Path(args.chart))
    print(f"chart: {args.chart}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
        print(f"rows: {args.json}")
    return 0
