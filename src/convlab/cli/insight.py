"""`convlab gradcam`, `convlab features`, `convlab report` and `convlab tune`: looking inside runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConvlabError
from .common import add_config_flags, config_keys

# the names of convlab.insight.attribution's registry, listed here so that --help needs no torch import
ATTRIBUTION_METHODS = ("saliency", "gradcam", "gradcam++", "ig", "ig-blur", "smoothgrad", "occlusion", "lime",
                       "kernelshap", "lrp", "guided-backprop", "guided-gradcam")


def add_commands(sub: argparse._SubParsersAction) -> None:
    gc = sub.add_parser("gradcam", help="Grad-CAM heatmaps: where the model looked",
                        description="Grad-CAM heatmaps over each image (PNG: image, heatmap, overlay) for the "
                                    "predicted class or --class, at the last conv layer or --layer.")
    gc.add_argument("run_dir", metavar="RUN_DIR")
    gc.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders of images")
    gc.add_argument("--layer", metavar="NAME", help="module name, e.g. features.3 or layer4.1.conv2 "
                                                    "(default: the last conv layer)")
    gc.add_argument("--class", "--target", dest="class_label", metavar="LABEL",
                    help="explain this class (default: the predicted one; a multi-label run needs it)")
    gc.add_argument("--out", metavar="DIR", required=True, help="folder for the PNG files")
    gc.set_defaults(func=cmd_gradcam)

    at = sub.add_parser("attribute", help="attribution maps of several methods, and how faithful each is",
                        description="Attribution maps for each image with each --method (one PNG per image: the "
                                    "image and every map, one colour scale per method; the raw maps as .npy). "
                                    "--evaluate scores each method on these images: deletion and insertion AUC "
                                    "against a random map, and the model-randomization check. Needs the "
                                    "attribution extra: pip install -e '.[attribution]' in the convlab folder.")
    at.add_argument("run_dir", metavar="RUN_DIR")
    at.add_argument("images", metavar="IMAGE_OR_FOLDER", nargs="*", help="image files or folders of images")
    at.add_argument("--method", default="gradcam", metavar="NAME[,NAME...]",
                    help="methods, comma-separated: " + ", ".join(ATTRIBUTION_METHODS) + " (default: gradcam)")
    at.add_argument("--target", metavar="LABEL", help="explain this class (default: each image's predicted one; a "
                                                      "multi-label run needs it)")
    at.add_argument("--out", metavar="DIR", help="folder for the PNG, .npy and evaluation files (default: "
                                                 "RUN_DIR/attribution)")
    at.add_argument("--evaluate", action="store_true", help="score each method (printed, and written to "
                                                            "OUT/evaluation.json and OUT/evaluation.md)")
    at.add_argument("--samples", type=int, metavar="N",
                    help="perturbed inputs per image for lime and kernelshap, 1 to 2000 (default: 200)")
    at.add_argument("--steps", type=int, metavar="N",
                    help="integral steps of ig and ig-blur, 1 to 256 (default: 32)")
    at.add_argument("--test-images", type=int, metavar="N",
                    help="attribute N images of the run's test split instead of files, drawn from each class in "
                         "proportion (seeded: the same N gives the same images)")
    at.add_argument("--layer", metavar="NAME", help="conv layer of gradcam, gradcam++ and guided-gradcam "
                                                    "(default: the last one)")
    at.add_argument("--mask", choices=("grid", "superpixel"),
                    help="features that lime and kernelshap switch on and off (default: grid)")
    at.set_defaults(func=cmd_attribute)

    fe = sub.add_parser("features", help="feature maps of every conv layer for one image",
                        description="Write the feature maps of each conv layer for IMAGE as PNG grids "
                                    "(features-NN-LAYER.png) and the first layer's filters (filters.png).")
    fe.add_argument("run_dir", metavar="RUN_DIR")
    fe.add_argument("image", metavar="IMAGE", help="one image file")
    fe.add_argument("--out", metavar="DIR", required=True, help="folder for the PNG files")
    fe.set_defaults(func=cmd_features)

    rp = sub.add_parser("report", help="one self-contained HTML report of a run",
                        description="Write an HTML report of a run (test metrics, confusion matrix, per-class "
                                    "table, curves, most confident mistakes with Grad-CAM, attribution maps with "
                                    "their faithfulness scores, then the config and dataset samples; for a "
                                    "detector: COCO metrics, PR curves and the confusion matrix at IoU 0.5, the "
                                    "test images with the most missed and false boxes); images are embedded, so "
                                    "the file opens anywhere without a server or network.")
    rp.add_argument("run_dir", metavar="RUN_DIR")
    rp.add_argument("--out", metavar="FILE", help="where to write it (default: RUN_DIR/report.html)")
    rp.add_argument("--method", metavar="NAME[,NAME...]",
                    help="attribution methods of a classifier report's attribution section (default: "
                         "gradcam,saliency,ig; 'none' leaves the section out)")
    rp.set_defaults(func=cmd_report)

    tu = sub.add_parser("tune", help="hyperparameter search with Optuna (resumable)",
                        description="Search settings with an Optuna study stored in STUDY_DIR/study.db (or the "
                                    "--storage database, shared by workers); rerunning the same command "
                                    "continues it. Trials are scored by their best validation accuracy (mAP for "
                                    "detection data) and "
                                    "pruned after any epoch that falls below the median of earlier trials. "
                                    "Writes STUDY_DIR/search.png and STUDY_DIR/best.yaml (use it with "
                                    "convlab train --config). Other flags are the fixed settings of every trial.")
    tu.add_argument("--param", metavar="NAME=SPEC", action="append", default=[],
                    help="a searched setting, repeatable: LOW:HIGH, LOW:HIGH:log or a list A,B,C "
                         "(lr=1e-4:1e-1:log, batch_size=32,64,128, optimizer=sgd,adam)")
    tu.add_argument("--trials", type=int, default=20, metavar="N",
                    help="finished trials the study should have (default: 20; grid stops at the grid's size)")
    tu.add_argument("--search", choices=("grid", "random", "tpe"), default="tpe", help="sampler (default: tpe)")
    tu.add_argument("--out", metavar="STUDY_DIR", required=True, help="study folder (created, or continued)")
    tu.add_argument("--config", metavar="FILE.yaml", help="YAML settings applied before the flags")
    tu.add_argument("--storage", metavar="URL", help="a database shared by workers on any machine, e.g. "
                    "postgresql://USER:PASSWORD@HOST/DB (any Optuna RDB storage: postgresql, mysql, sqlite); "
                    "start the same command N times to run N trials at once (default: STUDY_DIR/study.db)")
    tu.add_argument("--study", metavar="NAME", default="convlab", help="the study's name in the database "
                    "(default: convlab)")
    tu.add_argument("--heartbeat", type=int, default=30, metavar="SECONDS",
                    help="seconds between a running trial's heartbeats; a trial silent for twice as long (its "
                         "worker died) is marked failed and run again (default: 30)")
    add_config_flags(tu, exclude={"out", "quiet", "tensorboard"})
    tu.set_defaults(func=cmd_tune)


def _image_paths(items: list[str]) -> list[Path]:
    from ..data.decode import list_images  # lazy: start-up time

    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += list_images(path)
        elif path.is_file():
            paths.append(path)
        else:
            raise ConvlabError(f"image {path} does not exist")
    if not paths:
        raise ConvlabError(f"no image files in {', '.join(items)}")
    return paths


def cmd_gradcam(args) -> int:
    from ..insight.gradcam import gradcam_files  # lazy: start-up time
    from ..tasks import load_run  # lazy: start-up time

    run = load_run(args.run_dir, command="gradcam")
    for path in gradcam_files(run, _image_paths(args.images), Path(args.out), args.layer, args.class_label):
        print(path)
    return 0


def cmd_attribute(args) -> int:
    from ..data.splits import stratified_sample  # lazy: start-up time
    from ..insight.attribution import Settings, attribute  # lazy: start-up time
    from ..tasks import load_run  # lazy: start-up time

    given = {key: getattr(args, key) for key in ("samples", "steps", "layer", "mask")}
    settings = Settings(**{key: value for key, value in given.items() if value is not None})  # checks the ranges
    run = load_run(args.run_dir, command="attribute")
    if args.test_images is not None:
        if args.images:
            raise ConvlabError("pass image files or --test-images N, not both")
        if args.test_images < 1:
            raise ConvlabError(f"--test-images must be at least 1, got {args.test_images}")
        test = run.test_data()
        inputs = test.images[stratified_sample(test.labels, args.test_images, seed=0)]
    elif args.images:
        inputs = _image_paths(args.images)
    else:
        raise ConvlabError("name at least one IMAGE_OR_FOLDER, or pass --test-images N")
    out = Path(args.out) if args.out else run.path / "attribution"
    result = attribute(run, inputs, args.method, args.target, out, args.evaluate, settings,
                       log=lambda line: print(line, file=sys.stderr))
    if result.evaluation is not None:
        _print_evaluation(result.evaluation)
    for path in result.files:
        print(path)
    return 0


def _print_evaluation(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..insight.attribution.evaluate import COLUMNS, table_cells  # lazy: start-up time

    table = Table(title=f"faithfulness on {rows[0]['images']} images (randomization: the first "
                        f"{rows[-1].get('randomization_images', 0)})")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "method" else "right")
    for cells in table_cells(rows):
        table.add_row(*cells)
    Console(stderr=True, width=160).print(table)


def cmd_features(args) -> int:
    from ..insight.features import write_feature_maps  # lazy: start-up time
    from ..tasks import load_run  # lazy: start-up time

    run = load_run(args.run_dir, command="features")
    (image,) = _image_paths([args.image])[:1]
    for path in write_feature_maps(run, image, Path(args.out)):
        print(path)
    return 0


def cmd_report(args) -> int:
    from ..insight.report import build_report  # lazy: start-up time

    from ..insight.attribution.registry import parse_methods  # lazy: start-up time

    methods = None if args.method is None else [] if args.method == "none" else parse_methods(args.method)
    print(build_report(args.run_dir, args.out, methods))
    return 0


def cmd_tune(args) -> int:
    from ..insight.tune import tune  # lazy: start-up time

    fixed = {key: getattr(args, key) for key in config_keys() if key not in ("out", "quiet", "tensorboard")}
    tune(args.out, args.param, trials=args.trials, search=args.search, config=args.config, storage=args.storage,
         study_name=args.study, heartbeat=args.heartbeat, **fixed)
    return 0
