"""COCO128 as a real multi-label classification set: which of the 80 COCO classes appear in each image.

    python benchmarks/coco128_multilabel.py DATA_DIR/coco128 OUT_DIR

Reads the kit's YOLO layout (images/{train,val}/, labels/{train,val}/*.txt with 'class cx cy w h' lines,
data.yaml's names for the class ids) and keeps, per image, the set of class names among its boxes. Writes
OUT_DIR/train.csv and OUT_DIR/val.csv (columns path,labels) and OUT_DIR/all.csv (path,labels,split: train for the
train images, test for the val images, so one file trains and tests). Paths are relative to the coco128 folder,
labels space-separated with the spaces in names replaced by underscores (traffic light -> traffic_light).
Images without a box (background images) are left out and counted. Read them with e.g.

    convlab train --data csv:OUT_DIR/train.csv,DATA_DIR/coco128 ...

Why: a multi-label benchmark on real photos with COCO's long tail (128 images, many classes seen once or never),
not a synthetic set; the same CSVs feed the peers (fastai's MultiCategoryBlock reads them as they are).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import yaml

SPLITS = {"train": "train", "val": "test"}  # the kit's folder -> the split all.csv names it


def image_labels(root: Path, split: str, names: dict[int, str]) -> tuple[list[tuple[str, str]], int]:
    """(relative path, space-separated labels) for each image of split with a box, and the background count."""
    rows, background = [], 0
    for image in sorted((root / "images" / split).iterdir()):
        label_file = root / "labels" / split / f"{image.stem}.txt"
        lines = label_file.read_text().split("\n") if label_file.exists() else []
        found = {names[int(line.split()[0])].replace(" ", "_") for line in lines if line.strip()}
        if not found:
            background += 1
            continue
        rows.append((image.relative_to(root).as_posix(), " ".join(sorted(found))))
    return rows, background


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("coco128", type=Path, help="the kit's coco128 folder (images/, labels/, data.yaml)")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    root = args.coco128.resolve()
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]  # {id: name} (or a list, Ultralytics' other form)
    names = {int(k): v for k, v in (names.items() if isinstance(names, dict) else enumerate(names))}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    everything = []
    for split, role in SPLITS.items():
        rows, background = image_labels(root, split, names)
        write_csv(args.out_dir / f"{split}.csv", ["path", "labels"], rows)
        everything += [(path, labels, role) for path, labels in rows]
        per_image = [len(labels.split()) for _, labels in rows]
        classes = {label for _, labels in rows for label in labels.split()}
        print(f"{split}: {len(rows)} images ({background} background images left out), "
              f"{sum(per_image) / len(rows):.2f} labels per image (mean), {len(classes)}/{len(names)} classes occur")
    write_csv(args.out_dir / "all.csv", ["path", "labels", "split"], everything)
    print(f"wrote {args.out_dir / 'train.csv'}, {args.out_dir / 'val.csv'}, {args.out_dir / 'all.csv'} "
          f"(paths relative to {root})")


if __name__ == "__main__":
    main()
