"""Generated shapes written by hand in each format's own conventions (independent of convlab's writers), and the
comparison of two datasets' targets that the format tests share."""
import json
import shutil

import numpy as np
import yaml

SPLITS = ("train", "test")


def by_hand_coco(dataset, folder):
    """folder/annotations/instances_<split>.json (category ids 5, 7, 9: not 0-based) and folder/<split>/."""
    categories = [{"id": 5 + 2 * i, "name": name} for i, name in enumerate(dataset.classes)]
    ann_id = 0
    for split in SPLITS:
        images, annotations = [], []
        for item in getattr(dataset, split):
            (folder / split).mkdir(parents=True, exist_ok=True)
            shutil.copy(item.path, folder / split / item.path.name)
            images.append({"id": item.image_id, "file_name": item.path.name, "width": item.width,
                           "height": item.height})
            for (x1, y1, x2, y2), label in zip(item.boxes.tolist(), item.labels.tolist()):
                ann_id += 1
                annotations.append({"id": ann_id, "image_id": item.image_id, "category_id": 5 + 2 * label,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": 0})
        (folder / "annotations").mkdir(parents=True, exist_ok=True)
        (folder / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def by_hand_yolo(dataset, folder):
    """folder/data.yaml (names as a list), images/<split>/, labels/<split>/ ('class cx cy w h', 0-1); negatives
    get no label file."""
    for split in SPLITS:
        (folder / "images" / split).mkdir(parents=True)
        (folder / "labels" / split).mkdir(parents=True)
        for item in getattr(dataset, split):
            shutil.copy(item.path, folder / "images" / split / item.path.name)
            if len(item):
                lines = [f"{label} {(x1 + x2) / 2 / item.width} {(y1 + y2) / 2 / item.height} "
                         f"{(x2 - x1) / item.width} {(y2 - y1) / item.height}"
                         for (x1, y1, x2, y2), label in zip(item.boxes.tolist(), item.labels.tolist())]
                (folder / "labels" / split / f"{item.path.stem}.txt").write_text("\n".join(lines) + "\n")
    (folder / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "test": "images/test",
                                                      "nc": len(dataset.classes), "names": dataset.classes}))


def by_hand_voc(dataset, folder):
    """folder/Annotations/<stem>.xml (xmin, ymin 1-based, xmax, ymax inclusive), JPEGImages/, ImageSets/Main/
    train.txt and test.txt; stems made unique by their split."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True)
    for split in SPLITS:
        stems = []
        for item in getattr(dataset, split):
            stem = f"{split}_{item.path.stem}"
            stems.append(stem)
            shutil.copy(item.path, folder / "JPEGImages" / f"{stem}.png")
            objects = "".join(
                f"<object><name>{dataset.classes[label]}</name><difficult>0</difficult><bndbox><xmin>{x1 + 1:g}</xmin>"
                f"<ymin>{y1 + 1:g}</ymin><xmax>{x2:g}</xmax><ymax>{y2:g}</ymax></bndbox></object>"
                for (x1, y1, x2, y2), label in zip(item.boxes.tolist(), item.labels.tolist()))
            (folder / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.png</filename><size><width>{item.width}</width><height>"
                f"{item.height}</height><depth>3</depth></size>{objects}</annotation>")
        (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in dataset.classes))


BY_HAND = {"coco": by_hand_coco, "yolo": by_hand_yolo, "voc": by_hand_voc}


def assert_same_targets(read, expected, atol=1e-3):
    """Same classes, and per split the same images in order with the same boxes (within atol px) and labels."""
    assert read.classes == expected.classes
    for split in SPLITS:
        got, want = getattr(read, split), getattr(expected, split)
        assert len(got) == len(want), split
        for a, b in zip(got, want):
            assert (a.width, a.height) == (b.width, b.height)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=atol, rtol=0)
            np.testing.assert_array_equal(a.labels, b.labels)
            assert a.boxes.dtype == np.float32 and a.labels.dtype == np.int64
