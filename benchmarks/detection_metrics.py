"""Seconds to score a detection set: convlab's coco_metrics beside pycocotools' COCOeval, and their two mAPs.

    python benchmarks/detection_metrics.py DATA_DIR [--repeats 5] [--seed 0] [--false-per-image 3]

DATA_DIR is a COCO folder (annotations/instances_*.json; the first one found) or the JSON itself, e.g.
COCO128's coco/ folder. The predictions are made up with the seed: every ground truth box jittered (shift and
scale, ~10% of its size), one in ten given a random class, one in ten dropped, each scored at random, plus
random false boxes per image. convlab starts from its in-memory form (Annotated and prediction arrays) and
converts; pycocotools starts from the COCO dicts built once beforehand, as a user with the JSON would. The two
run alternately, --repeats times each after one warm-up; the table gives medians and their ratio.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def read_coco(data: Path):
    """(truth, classes) from a COCO JSON: a few lines here, so the benchmark needs no dataset reader."""
    from convlab.detection.targets import Annotated

    path = data if data.suffix == ".json" else next(iter(sorted(data.glob("annotations/instances_*.json"))), None)
    if path is None or not path.exists():
        sys.exit(f"{data}: no annotations/instances_*.json inside (give a COCO folder or the JSON itself)")
    coco = json.loads(path.read_text())
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: k for k, c in enumerate(categories)}
    per_image = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    truth = []
    for img in coco["images"]:
        anns = per_image[img["id"]]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        truth.append(Annotated(Path(img["file_name"]), img["width"], img["height"], np.array(boxes).reshape(-1, 4),
                               [index[a["category_id"]] for a in anns],
                               iscrowd=np.array([a.get("iscrowd", 0) for a in anns], dtype=np.uint8),
                               area=np.array([a["area"] for a in anns], dtype=np.float32), image_id=img["id"]))
    return truth, [c["name"] for c in categories], path


def make_predictions(truth, num_classes: int, seed: int, false_per_image: float) -> list[dict]:
    """Ground truth boxes jittered, some relabelled or dropped, random scores; plus random false boxes."""
    rng = np.random.default_rng(seed)
    predictions = []
    for item in truth:
        keep = rng.random(len(item)) > 0.1
        boxes, labels = item.boxes[keep].astype(np.float64), item.labels[keep].copy()
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        boxes += rng.normal(0, 0.1, boxes.shape) * size
        relabel = rng.random(len(labels)) < 0.1
        labels[relabel] = rng.integers(0, num_classes, relabel.sum())
        n_false = rng.poisson(false_per_image)
        corner = rng.random((n_false, 2)) * [item.width, item.height]
        extent = rng.random((n_false, 2)) * [item.width, item.height] / 3 + 4
        boxes = np.vstack([boxes, np.hstack([corner, corner + extent])])
        labels = np.concatenate([labels, rng.integers(0, num_classes, n_false)])
        predictions.append({"boxes": boxes, "labels": labels, "scores": rng.random(len(labels))})
    return predictions


def pycocotools_map(ground_truth: dict, detections: list[dict]) -> float:
    """pycocotools' own COCOeval on the COCO dicts (its printing silenced): mAP@[.5:.95]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        evaluation = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a COCO folder (annotations/instances_*.json) or the JSON file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--false-per-image", type=float, default=3.0)
    args = parser.parse_args()

    from convlab.detection.metrics import coco_metrics, to_coco_detections, to_coco_ground_truth

    truth, classes, path = read_coco(args.data)
    predictions = make_predictions(truth, len(classes), args.seed, args.false_per_image)
    ground_truth = to_coco_ground_truth(truth, classes)
    detections = to_coco_detections(predictions, truth)
    runs = {"convlab coco_metrics": lambda: coco_metrics(truth, predictions, classes)["map"],
            "pycocotools COCOeval": lambda: pycocotools_map(ground_truth, [dict(d) for d in detections])}
    times, maps = {name: [] for name in runs}, {}
    for name, run in runs.items():  # warm-up: imports, first allocation
        maps[name] = run()
    for _ in range(args.repeats):
        for name, run in runs.items():  # alternately, so both see the same machine load
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    boxes = sum(len(item) for item in truth)
    print(f"{path.name}: {len(truth)} images, {boxes} boxes, {len(classes)} classes; {len(detections)} predicted "
          f"boxes (seed {args.seed}); median of {args.repeats}\n")
    print("| scorer | s per evaluation | mAP@[.5:.95] |\n| --- | ---: | ---: |")
    for name in runs:
        print(f"| {name} | {statistics.median(times[name]):.4f} | {maps[name]:.6f} |")
    ours, theirs = (statistics.median(times[name]) for name in runs)
    difference = abs(maps["convlab coco_metrics"] - maps["pycocotools COCOeval"])
    print(f"\nconvlab / pycocotools time: {ours / theirs:.2f}; mAP difference {difference:.1e} "
          f"({'within' if difference < 1e-4 else 'NOT within'} 1e-4)")


if __name__ == "__main__":
    main()
