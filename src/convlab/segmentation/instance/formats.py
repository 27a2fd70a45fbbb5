"""Instance masks in their files: COCO polygons and RLE (read beside detection's COCO reader, which checks the
images and splits) and folders of instance-id PNGs (0 background, k = object k, as Penn-Fudan's PedMasks)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ...data.decode import list_images
from ...data.splits import stratified_split
from ...detection.formats import parse_spec, read_detection
from ...detection.targets import Annotated, DetectionSet
from ...errors import ConvlabError
from .targets import outlined

# (images folder, masks folder) pairs an instances:DIR may hold; a mask is named as its image, or stem_mask.png
LAYOUTS = (("images", "masks"), ("PNGImages", "PedMasks"))
INSTANCES_SPEC = "instances:DIR (images/ and masks/, or train/ and test/ each with them; PNGImages/ and PedMasks/)"


def read_coco_instances(spec: str, seed: int = 0) -> DetectionSet:
    """coco:FILE or coco:FOLDER -> its objects with masks decoded from their polygons or RLE (boxes derived from
    the masks); the images, classes and splits are detection's reader's."""
    found = read_detection(spec, seed=seed)
    _, path, _ = parse_spec(spec)
    files = _annotation_files(path, found.split_names)
    by_file = {file: _annotations(file) for file in set(files.values())}
    found.train = [_with_masks(item, *by_file[files["train"]]) for item in found.train]
    found.test = [_with_masks(item, *by_file[files["test"]]) for item in found.test]
    found.box_issues = []  # the boxes are the masks'
    return found


def _annotation_files(path: Path, split_names: dict[str, str]) -> dict[str, Path]:
    """The annotation file each split's images come from (a one-file dataset's test split is cut from it)."""
    if path.is_file():
        return {"train": path, "test": path}
    files = {role: path / "annotations" / f"instances_{name}.json" for role, name in split_names.items()}
    return {role: file if file.is_file() else files["train"] for role, file in files.items()}


def _annotations(file: Path):
    """A COCO file -> (its faster-coco-eval COCO index, {category id: 0-based index})."""
    from faster_coco_eval import COCO

    coco = COCO(json.loads(file.read_text(encoding="utf-8")), print_function=lambda *a, **k: None)
    return coco, {cid: i for i, cid in enumerate(sorted(coco.getCatIds()))}


def _with_masks(item: Annotated, coco, index: dict[int, int]) -> Annotated:
    image = coco.imgs[item.image_id]
    if (image.get("width"), image.get("height")) != (item.width, item.height):
        raise ConvlabError(f"{item.path}: the annotations give {image.get('width')} x {image.get('height')} "
                           f"pixels but the image is {item.width} x {item.height}; fix the file's width and height")
    anns = [ann for ann in coco.imgToAnns[item.image_id] if ann.get("segmentation")]
    masks = np.array([coco.annToMask(ann) for ann in anns], dtype=bool).reshape(-1, item.height, item.width)
    return outlined(item.path, masks, [index[ann["category_id"]] for ann in anns],
                    [int(ann.get("iscrowd") or 0) for ann in anns], item.image_id)


def read_instance_pngs(root: Path, seed: int = 0, test_fraction: float = 0.2) -> DetectionSet:
    """instances:DIR -> its objects, one per id of each instance-id PNG; classes.txt (background, then the
    objects' name) names the class, else "object". A folder without train/ and test/ (or val/) is split by
    image with `seed`."""
    if not root.is_dir():
        raise ConvlabError(f"instances:{root}: no such folder; give {INSTANCES_SPEC}")
    names = (root / "classes.txt").read_text().split() if (root / "classes.txt").is_file() else []
    classes = [names[1] if len(names) > 1 else "object"]
    test = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    if (root / "train").is_dir() and test is not None:
        return DetectionSet(root.name, classes, _read_pngs(root / "train"), _read_pngs(test),
                            split_names={"train": "train", "test": test.name})
    items = _read_pngs(root)
    keep, held = stratified_split(np.zeros(len(items)), test_fraction, seed) if len(items) > 1 else ([0], [])
    note = (f"{root.name} has one split: {len(held)} of {len(items)} images held out as the test split, by image "
            f"with seed {seed}")
    return DetectionSet(root.name, classes, [items[i] for i in keep], [items[i] for i in held], notes=[note])


def _read_pngs(folder: Path) -> list[Annotated]:
    images, masks = next(((folder / i, folder / m) for i, m in LAYOUTS if (folder / i).is_dir()),
                         (None, None))
    if images is None or not masks.is_dir():
        raise ConvlabError(f"{folder}: no images/ and masks/ folders; give {INSTANCES_SPEC}")
    return [_instances(path, _mask_of(path, masks), n + 1) for n, path in enumerate(list_images(images))]


def _mask_of(image: Path, masks: Path) -> Path:
    found = next((masks / f"{image.stem}{suffix}.png" for suffix in ("", "_mask")
                  if (masks / f"{image.stem}{suffix}.png").is_file()), None)
    if found is None:
        raise ConvlabError(f"{image}: no instance mask {masks / image.stem}.png (or {image.stem}_mask.png); give "
                           f"every image its mask")
    return found


def _instances(image: Path, mask_file: Path, image_id: int) -> Annotated:
    size, ids = _read(image, "image", lambda picture: picture.size), _read(mask_file, "mask", np.array)
    if ids.ndim != 2 or ids.shape[::-1] != size:
        raise ConvlabError(f"{mask_file}: a {'x'.join(map(str, ids.shape[::-1]))} mask for a {size[0]}x{size[1]} "
                           f"image; give a one-channel instance-id PNG of the image's size")
    objects = np.unique(ids[ids > 0])
    return outlined(image, ids[None] == objects[:, None, None], np.zeros(len(objects), np.int64),
                    image_id=image_id)


def _read(path: Path, what: str, take):
    try:
        with Image.open(path) as picture:
            return take(picture)
    except OSError as err:
        raise ConvlabError(f"cannot read {what} {path}: {err}") from None
