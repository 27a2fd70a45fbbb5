"""`convlab convert`: a detection dataset from one format (COCO, YOLO, Pascal VOC) into another."""
from __future__ import annotations

import argparse
import sys

FORMAT_HELP = ("coco:ANNOTATIONS.json[,IMAGES_DIR] or coco:FOLDER (annotations/instances_*.json), yolo:DATA.yaml or "
               "yolo:FOLDER (images/, labels/), voc:DIR (Annotations/, JPEGImages/, ImageSets/Main/)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("convert", help="write a detection dataset in another format (coco, yolo, voc)",
                            description="Read a detection dataset, check every box (degenerate ones dropped, "
                                        "ones over the edge clipped, each named on stderr) and write it in another "
                                        "format with both splits. Images are hard-linked where possible, else "
                                        "copied. A source with one split is split by image with --seed.")
    parser.add_argument("source", metavar="SRC", help=f"the dataset: {FORMAT_HELP}")
    parser.add_argument("--to", required=True, metavar="FORMAT", help="the format to write: coco, yolo or voc")
    parser.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder for the converted dataset")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the split by image, for a source with one split (default: 0)")
    parser.add_argument("--test-fraction", type=float, default=0.2, metavar="X",
                        help="share of images held out as the test split, for a source with one split "
                             "(default: 0.2)")
    parser.set_defaults(func=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from ..detection.checks import describe  # lazy: start-up time (NumPy, Pillow)
    from ..detection.convert import convert, summary  # lazy: start-up time

    dataset, notes = convert(args.source, args.to, args.out, args.seed, args.test_fraction)
    for issue in dataset.issues + dataset.box_issues:
        print(f"warning: {describe(issue)}", file=sys.stderr)
    for note in dataset.notes + notes:
        print(f"note: {note}", file=sys.stderr)
    print(summary(dataset, args.to, args.out))
    return 0
