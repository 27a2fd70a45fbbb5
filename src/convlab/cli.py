"""The `convlab` command line: parses arguments and calls the library, nothing more."""
from __future__ import annotations

import argparse
import json
import os
import sys
import typing

from . import config as cfg
from .errors import ConvlabError


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, with the field's type, choices and help: the config is the single source."""
    for key in cfg.FLAT_KEYS:
        info = cfg.field_info(key)
        kind = cfg.field_type(key)
        help_text = info.metadata["help"]
        if kind is bool:
            parser.add_argument(cfg.flag(key), dest=key, action="store_const", const=True, default=None,
                                help=help_text)
            continue
        options = cfg.choices(key)
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind) if options is None else str
        metavar = {"data": "NAME", "model": "NAME", "data_dir": "DIR", "out": "DIR", "early_stop": "PATIENCE",
                   "image_size": "SIZE"}.get(key, {int: "N", float: "X"}.get(base))
        if "default" not in help_text:
            help_text += f" (default: {_default_text(key)})"
        parser.add_argument(cfg.flag(key), dest=key, type=base, choices=options, default=None, metavar=metavar,
                            help=help_text)


def _default_text(key: str) -> str:
    section, name = cfg.FLAT_KEYS[key]
    default = getattr(getattr(cfg.Config(), section), name)
    recipe_keys = {"model", "optimizer", "lr", "schedule", "epochs", "batch_size", "augment", "weight_decay",
                   "momentum"}
    return "the dataset's recipe" if key in recipe_keys else str(default)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="convlab", description="Train, evaluate and use CNN image classifiers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    train = sub.add_parser("train", help="train a model and write a run folder",
                           description="Train a CNN. Settings come from the dataset's recipe, then --config FILE, "
                                       "then flags; the resolved config is printed and saved in the run folder.")
    train.add_argument("--config", metavar="FILE.yaml", help="YAML settings applied before the flags")
    add_config_flags(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="metrics of a run on its test split or on other data",
                        description="Evaluate a run folder on its test split, or on --data/--data-dir.")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--data", metavar="NAME", help="evaluate on this dataset's test split instead")
    ev.add_argument("--data-dir", metavar="DIR", help="folder with that dataset's files")
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON document")
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="classify images with a run",
                        description="Classify image files or folders of images with a trained run.")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    pr.add_argument("--top-k", type=int, default=5, metavar="K", help="how many classes to show (default: 5)")
    pr.add_argument("--json", action="store_true", help='print [{"path", "top": [{"label", "prob"}]}] as JSON')
    pr.set_defaults(func=cmd_predict)

    models = sub.add_parser("models", help="list the models", description="List the presets (with layers and "
                            "parameter counts for the given data) and every torchvision classifier.")
    models.add_argument("--data", metavar="NAME", default="mnist",
                        help="count parameters for this dataset's image shape (default: mnist)")
    models.set_defaults(func=cmd_models)

    datasets = sub.add_parser("datasets", help="list the datasets and their default recipes",
                              description="List the datasets with their shapes and default training recipes.")
    datasets.set_defaults(func=cmd_datasets)
    return parser


def cmd_train(args) -> int:
    from .session import train

    overrides = {key: getattr(args, key) for key in cfg.FLAT_KEYS}
    train(args.config, **overrides)
    return 0


def cmd_eval(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from .run import load_run

    run = load_run(args.run_dir)
    metrics = run.evaluate(data=args.data, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(metrics, indent=1, ensure_ascii=False))
        return 0
    console = Console(highlight=False, soft_wrap=True)
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
    from .run import load_run

    if args.top_k < 1:
        raise ConvlabError(f"--top-k must be at least 1, got {args.top_k}")
    run = load_run(args.run_dir)
    results = run.predict(args.paths, top_k=args.top_k)
    if args.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
        return 0
    for result in results:
        tops = "  ".join(f"{t['label']} {t['prob']:.3f}" for t in result["top"])
        print(f"{result['path']}: {tops}")
    return 0


def cmd_models(args) -> int:
    from .data.registry import parse_data_name
    from .models.registry import count_parameters, create_model, list_models

    entry, _ = parse_data_name(args.data)
    channels, height, width = entry.shape or (3, 64, 64)
    classes = entry.num_classes or 10
    print(f"presets (parameters for {channels}x{height}x{width} input, {classes} classes):")
    entries = list_models()
    for model in entries:
        if model.family == "preset":
            params = count_parameters(create_model(model.name, channels, classes, (height, width)))
            print(f"  {model.name:<10} {params:>9,}  {model.description}")
    names = [m.name for m in entries if m.family == "torchvision"]
    print(f"torchvision classifiers ({len(names)}; head sized to the classes, 1-channel input adapted):")
    for name in names:
        print(f"  {name}")
    return 0


def cmd_datasets(args) -> int:
    from .data.registry import list_datasets

    for entry in list_datasets():
        shape = "x".join(map(str, entry.shape)) if entry.shape else "any size"
        classes = f"{entry.num_classes} classes" if entry.num_classes else "classes from folders"
        recipe = " ".join(f"{k}={v}" for k, v in entry.recipe.items())
        name = entry.name + (":PATH" if entry.takes_argument else "")
        print(f"{name:<17} {shape:<8} {classes:<21} recipe: {recipe}  -- {entry.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ConvlabError as err:
        print(f"convlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"convlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `convlab models | head`: the reader left, nothing is wrong
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
