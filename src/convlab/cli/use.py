"""`convlab eval` and `convlab predict`: using a trained run (a classifier, a detector or a segmenter)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConvlabError

# the flags each task reads (dest -> flag); a flag given for a run of another task is refused by name
PREDICT_FLAGS = {"classify": {"top_k": "--top-k", "tta": "--tta"},
                 "multilabel": {"top_k": "--top-k", "tta": "--tta"},
                 "detect": {"conf": "--conf", "iou": "--iou", "save": "--save"},
                 "segment": {"tile": "--tile", "overlap": "--overlap", "save": "--save"}}
EVAL_FLAGS = {"classify": {"tta": "--tta"}, "multilabel": {"tta": "--tta"},
              "segment": {"tile": "--tile", "overlap": "--overlap"}}
TTA_HELP = ("classifier: test-time augmentation, the probabilities averaged over views of each image: none, flip "
            "(the image and its mirror), five-crop (the image resized to the input size / 0.875, its four corner "
            "and centre crops) (default: none)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("eval", help="metrics of a run on its test split or on other data",
                        description="Evaluate a run folder on its test split, or on --data/--data-dir: accuracy "
                                    "and per-class precision/recall/F1 for a classifier, COCO mAP@[.5:.95], AP50, "
                                    "AP75, AP small/medium/large, AR@100 and per-class AP for a detector, mIoU, "
                                    "Dice, pixel accuracy and per-class IoU and Dice for a segmenter.")
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, a compressed variant folder or a .onnx file")
    ev.add_argument("--data", metavar="NAME", help="evaluate on this dataset's test split instead")
    ev.add_argument("--data-dir", metavar="DIR", help="folder with that dataset's files")
    ev.add_argument("--json", action="store_true", help="print the metrics as one JSON document (with --tta: "
                                                        "the TTA metrics, the plain ones under \"without_tta\")")
    ev.add_argument("--tta", metavar="NAME", help=TTA_HELP)
    _add_tiling(ev)
    ev.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="classify images, find their objects or segment them with a run",
                        description="Classify image files or folders of images with a trained classifier (the "
                                    "top classes), find their objects with a detector (boxes, classes, scores), or "
                                    "give every pixel a class with a segmenter (the classes present and their "
                                    "share of the pixels).")
    pr.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, a compressed variant folder or a .onnx file")
    pr.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    pr.add_argument("--top-k", type=int, metavar="K", help="classifier: how many classes to show (default: 5)")
    pr.add_argument("--tta", metavar="NAME", help=TTA_HELP)
    pr.add_argument("--conf", type=float, metavar="X",
                    help="detector: keep boxes scoring at least X, 0 to 1 (default: 0.25; 0 keeps every box "
                         "the detector gives, those mAP is computed on)")
    pr.add_argument("--iou", type=float, metavar="X",
                    help="detector: per-class NMS drops a box overlapping a better one by more than X, 0 to 1 "
                         "(default: 0.5; 1 keeps the detector's own NMS only)")
    pr.add_argument("--save", metavar="DIR",
                    help="detector: write each image with its boxes drawn to DIR/NAME.png; segmenter: the class "
                         "map as a palette PNG (pixel value = class index) to DIR/NAME_mask.png and the image "
                         "with the mask over it and a legend to DIR/NAME_overlay.png")
    _add_tiling(pr)
    pr.add_argument("--json", action="store_true",
                    help='print JSON: classifier [{"path", "top": [{"label", "prob"}]}], detector [{"path", '
                         '"width", "height", "boxes": [{"label", "score", "box": [x1, y1, x2, y2]}]}], segmenter '
                         '[{"path", "width", "height", "pixels": {class: count}, "masks": [{"class", "rle": '
                         '{"size": [h, w], "counts"}}]}] (COCO compressed RLE, one per class present)')
    pr.set_defaults(func=cmd_predict)


def _add_tiling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, metavar="SIZE",
                        help="segmenter: slide windows of SIZE x SIZE over each image at its own resolution and "
                             "blend them (for images larger than the training size; default: one pass on the "
                             "image resized to the training size)")
    parser.add_argument("--overlap", type=float, metavar="F",
                        help="segmenter with --tile: the share of a window its neighbour covers, 0 to <1 "
                             "(default: 0.25)")


def set_cpu_threads() -> None:
    """As training does: torch threads on the idle cores only (a busy machine slows extra threads)."""
    import torch

    from ..training.performance import set_threads  # lazy: start-up time

    set_threads(0, torch.device("cpu"))


def cmd_eval(args) -> int:
    from rich.console import Console

    from ..compress.load import load_variant  # lazy: start-up time
    from ..tasks import task_of  # lazy: start-up time

    check_tta(args.tta)
    set_cpu_threads()
    run = load_variant(args.run_dir, command="eval")
    task = task_of(run.config).name
    options = _task_options(args, task, run.path, EVAL_FLAGS)
    metrics = run.evaluate(data=args.data, data_dir=args.data_dir, **options)
    if args.json:
        print(json.dumps(metrics, indent=1, ensure_ascii=False))
        return 0
    console = Console(highlight=False, soft_wrap=True)
    for warning in metrics.get("warnings", []):
        console.print(f"warning: {warning}", markup=False)
    EVAL_PRINTERS[task](console, run, metrics)
    return 0


def _print_classification(console, run, metrics: dict) -> None:
    from rich.table import Table

    if "without_tta" in metrics:  # --tta: the plain line first, then the one with TTA, whose table follows
        console.print(f"{run.path}: {_classification_head(metrics['without_tta'])}  (without TTA)", markup=False)
        console.print(f"{run.path}: {_classification_head(metrics)}  (--tta {metrics['tta']})", markup=False)
    else:
        console.print(f"{run.path}: {_classification_head(metrics)}", markup=False)
    table = Table("class", "precision", "recall", "f1", "support")
    for label, row in metrics["per_class"].items():
        table.add_row(label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]))
    console.print(table)
    _print_calibration(console, metrics)


def _print_calibration(console, metrics: dict) -> None:
    """ECE and NLL, before and after the run's temperature when it has one (runs from before have neither)."""
    if "ece" not in metrics:
        return
    line = f"calibration: ECE {metrics['ece']:.4f}  NLL {metrics['nll']:.4f}"
    before = metrics.get("before_temperature")
    if before is not None:
        line = (f"calibration: ECE {before['ece']:.4f} -> {metrics['ece']:.4f}  NLL {before['nll']:.4f} -> "
                f"{metrics['nll']:.4f}  (before -> after the run's temperature)")
    console.print(line, markup=False)


def _print_multilabel(console, run, metrics: dict) -> None:
    from rich.table import Table

    console.print(f"{run.path}: mean AP {_value(metrics['mean_ap'])}  micro F1 {metrics['micro_f1']:.4f}  macro F1 "
                  f"{metrics['macro_f1']:.4f}  subset accuracy {metrics['subset_accuracy']:.4f}  Hamming loss "
                  f"{metrics['hamming_loss']:.4f}  ({metrics['num_samples']} images)", markup=False)
    table = Table("label", "precision", "recall", "f1", "AP", "support", "threshold")
    for label, row in metrics["per_label"].items():
        table.add_row(label, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      _value(row["ap"], 3), str(row["support"]), f"{row['threshold']:.3f}")
    console.print(table)
    console.print("('-': no image of the test split has the label)", markup=False)
    _print_calibration(console, metrics)


def _classification_head(metrics: dict) -> str:
    head = f"accuracy {metrics['accuracy']:.4f}"
    if "balanced_accuracy" in metrics:  # runs written before it was measured lack it
        head += f"  balanced accuracy {metrics['balanced_accuracy']:.4f}"
    if "top5_accuracy" in metrics:
        head += f"  top-5 {metrics['top5_accuracy']:.4f}"
    head += f"  macro P/R/F1 {metrics['macro_precision']:.4f}/{metrics['macro_recall']:.4f}/{metrics['macro_f1']:.4f}"
    return f"{head}  ({metrics['num_samples']} images)"


def check_tta(name: str | None) -> None:
    """--tta's name checked before a run is loaded (one line naming the names)."""
    if name is not None:
        from ..models.tta import tta_named  # lazy: start-up time (torchvision)

        tta_named(name)


def _print_detection(console, run, metrics: dict) -> None:
    from rich.table import Table

    console.print(f"{run.path}: mAP@[.5:.95] {_value(metrics['map'])}  AP50 {_value(metrics['map50'])}  AP75 "
                  f"{_value(metrics['map75'])}  ({metrics['num_images']} images, {metrics['num_boxes']} boxes)",
                  markup=False)
    console.print(f"AP small/medium/large {_value(metrics['map_small'])}/{_value(metrics['map_medium'])}/"
                  f"{_value(metrics['map_large'])}  AR@100 {_value(metrics['mar100'])}  ('-': no such boxes)",
                  markup=False)
    table = Table("class", "AP@[.5:.95]")
    for label, ap in metrics["per_class_ap"].items():
        table.add_row(label, _value(ap, 3))
    console.print(table)


def _print_instance(console, run, metrics: dict) -> None:
    from rich.table import Table

    console.print(f"{run.path}: mask mAP@[.5:.95] {_value(metrics['mask_map'])}  AP50 {_value(metrics['mask_map50'])}"
                  f"  AP75 {_value(metrics['mask_map75'])}  box mAP@[.5:.95] {_value(metrics['box_map'])}  "
                  f"({metrics['num_images']} images, {metrics['num_instances']} objects)", markup=False)
    table = Table("class", "mask AP@[.5:.95]")
    for label, ap in metrics["per_class_ap"].items():
        table.add_row(label, _value(ap, 3))
    console.print(table)


def _value(value: float | None, digits: int = 4) -> str:
    """A COCO metric, or '-' where COCO defines none (no ground truth of that kind)."""
    return "-" if value is None else f"{value:.{digits}f}"


def _print_segmentation(console, run, metrics: dict) -> None:
    from rich.table import Table

    console.print(f"{run.path}: mIoU {_value(metrics['miou'])}  Dice {_value(metrics['dice'])}  pixel accuracy "
                  f"{_value(metrics['pixel_accuracy'])}  ({metrics['num_images']} images)", markup=False)
    table = Table("class", "IoU", "Dice")
    for label, iou in metrics["per_class_iou"].items():
        table.add_row(label, _value(iou, 3), _value(metrics["per_class_dice"].get(label), 3))
    console.print(table)
    console.print("('-': the class is in neither the truth nor the prediction)", markup=False)


EVAL_PRINTERS = {"classify": _print_classification, "multilabel": _print_multilabel, "detect": _print_detection, "segment": _print_segmentation,
                 "instance": _print_instance}


def cmd_predict(args) -> int:
    from ..compress.load import load_variant  # lazy: start-up time
    from ..tasks import task_of  # lazy: start-up time

    check_tta(args.tta)
    run = load_variant(args.run_dir, command="predict")
    task = task_of(run.config).name
    options = _task_options(args, task, run.path, PREDICT_FLAGS)
    set_cpu_threads()
    save = options.pop("save", None)
    results = run.predict(args.paths, **options)
    if save is not None:
        saved = PREDICTION_SAVERS[task](results, run.classes, Path(save))
    if args.json:
        print(json.dumps(PREDICTION_JSON[task](results, run.classes), indent=1, ensure_ascii=False))
    else:
        PREDICTION_PRINTERS[task](results)
    if save is not None:
        print(saved, file=sys.stderr)
    return 0


def _task_options(args, task: str, path, table: dict[str, dict[str, str]]) -> dict:
    """The flags of `table` given that the run's task reads, checked; a flag for another task's runs is refused
    by name."""
    own = table.get(task, {})
    for dest, flag in {dest: flag for flags in table.values() for dest, flag in flags.items()}.items():
        if dest not in own and getattr(args, dest) is not None:
            owners = " and ".join(other for other, flags in table.items() if dest in flags)
            raise ConvlabError(f"{flag} is for {owners} runs; {path} is a {task} run"
                               + (f" (its flags: {', '.join(own.values())})" if own else ""))
    if getattr(args, "top_k", None) is not None and args.top_k < 1:
        raise ConvlabError(f"--top-k must be at least 1, got {args.top_k}")
    for flag, value in (("--conf", getattr(args, "conf", None)), ("--iou", getattr(args, "iou", None))):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConvlabError(f"{flag} must be between 0 and 1, got {value}")
    if args.overlap is not None and args.tile is None:
        raise ConvlabError(f"--overlap {args.overlap} needs --tile SIZE: the overlap is between tiles")
    if args.tile is not None:
        from ..segmentation.run import OVERLAP  # lazy: start-up time
        from ..segmentation.tiles import check_tiling  # lazy: start-up time

        check_tiling(args.tile, OVERLAP if args.overlap is None else args.overlap)
    return {dest: getattr(args, dest) for dest in own if getattr(args, dest) is not None}


def _print_top(results: list[dict]) -> None:
    for result in results:
        tops = "  ".join(f"{t['label']} {t['prob']:.3f}" for t in result["top"])
        print(f"{result['path']}: {tops}")


def _print_labels(results: list[dict]) -> None:
    """One line per image: every label at or above its threshold, or the most probable one when none is."""
    for result in results:
        shown = "  ".join(f"{t['label']} {t['prob']:.3f}" for t in result["labels"])
        if not shown:
            best = result["top"][0]
            shown = f"(no label above its threshold; most probable {best['label']} {best['prob']:.3f})"
        print(f"{result['path']}: {shown}")


def _print_boxes(results: list[dict]) -> None:
    """One row per box (x1 y1 x2 y2 in the image's pixels); an image without boxes gets a row saying so."""
    from rich.console import Console
    from rich.table import Table

    table = Table("image", "class", "score", "x1", "y1", "x2", "y2")
    for result in results:
        if not result["boxes"]:
            table.add_row(result["path"], "(no boxes)", "", "", "", "", "")
        for box in result["boxes"]:
            table.add_row(result["path"], box["label"], f"{box['score']:.3f}", *(f"{v:.1f}" for v in box["box"]))
    Console(highlight=False, soft_wrap=True).print(table)


def _print_pixels(results: list[dict]) -> None:
    """One line per image: the classes present, most pixels first, with their share of the image's pixels."""
    for result in results:
        total = result["width"] * result["height"]
        shares = sorted(result["pixels"].items(), key=lambda item: -item[1])
        print(f"{result['path']} ({result['width']}x{result['height']}): "
              + "  ".join(f"{name} {100 * count / total:.1f}%" for name, count in shares))


def _save_boxes(results: list[dict], classes: list[str], folder: Path) -> str:
    from ..detection.drawn import save_drawn  # lazy: start-up time

    save_drawn(results, classes, folder)
    return f"images with boxes: {folder}"


def _save_masks(results: list[dict], classes: list[str], folder: Path) -> str:
    from ..segmentation.predictions import save_masks  # lazy: start-up time

    save_masks(results, classes, folder)
    return f"masks (NAME_mask.png) and overlays (NAME_overlay.png): {folder}"


def _masks_json(results: list[dict], classes: list[str]) -> list[dict]:
    from ..segmentation.predictions import as_json  # lazy: start-up time

    return as_json(results, classes)


PREDICTION_PRINTERS = {"classify": _print_top, "multilabel": _print_labels, "detect": _print_boxes, "segment": _print_pixels}
PREDICTION_SAVERS = {"detect": _save_boxes, "segment": _save_masks}  # what --save writes (the tasks reading it)
PREDICTION_JSON = {"classify": lambda results, classes: results, "multilabel": lambda results, classes: results,
                   "detect": lambda results, classes: results,
                   "segment": _masks_json}  # predict's results as --json prints them
