"""Instance masks in folders of instance-id PNGs (0 background, k = object k, as Penn-Fudan's PedMasks); COCO and
YOLO-seg files are segmentation's readers' (segmentation/formats), their objects taken as they are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...data.decode import list_images
from ...data.splits import stratified_split
from ...detection.targets import Annotated, DetectionSet
from ...errors import ConvlabError
from .targets import outlined

# (images folder, masks folder) pairs an instances:DIR may hold; a mask is named as its image, or stem_mask.png
LAYOUTS = (("images", "masks"), ("PNGImages", "PedMasks"))
INSTANCES_SPEC = "instances:DIR (images/ and masks/, or train/ and test/ each with them; PNGImages/ and PedMasks/)"


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
