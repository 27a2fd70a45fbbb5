"""Mask folders, `masks:DIR`: DIR/images and DIR/masks (a class-index PNG per image, same name: palette or gray,
255 = ignore), or DIR/train and DIR/test (or DIR/val) each holding those; class names from DIR/classes.txt or
DIR/data.yaml."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ...data.decode import UnreadableImage, list_images
from ...detection.checks import Checker
from ...errors import ConvlabError
from ..targets import IGNORE, Masked
from ._base import Format, Found, class_names, register

HINT = "give masks:DIR with images/ and masks/ (or train/ and test/ or val/, each holding images/ and masks/)"
MODES = ("P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N")  # one class index per pixel


def read(path: Path, extra: list[str]) -> Found:
    if extra:
        raise ConvlabError(f"masks:{path},{','.join(extra)}: a mask folder takes no extra fields; {HINT}")
    if not path.is_dir():
        raise ConvlabError(f"masks:{path} is not a folder; {HINT}")
    folders = _split_folders(path)
    checker, issues = Checker(), []
    splits = {}
    for name, folder in folders.items():  # image ids 1, 2, ... across the splits
        splits[name] = _read_split(folder, checker, issues, first_id=sum(map(len, splits.values())) + 1)
    classes, names_file = class_names(path)
    test = next((name for name in folders if name != "train"), None)
    found = Found(path, classes or [], splits, "train", test, checker.issues + issues)
    if classes is None:
        found.classes = _numbered(splits, path, found.notes)
    else:
        for item in (item for items in splits.values() for item in items):
            _check_indices(item, found.classes, names_file)
    found.notes += _only_ignore(splits)
    return found


def _split_folders(root: Path) -> dict[str, Path]:
    """{"train": root/train, and "test": root/test or else "val": root/val} where those exist, else
    {"train": root}: the splits by the names of their folders."""
    if not (root / "train").is_dir():
        return {"train": root}
    test = next((name for name in ("test", "val") if (root / name).is_dir()), None)
    return {"train": root / "train", **({test: root / test} if test else {})}


def _read_split(folder: Path, checker: Checker, issues: list[dict], first_id: int) -> list[Masked]:
    """Each image of folder/images with its mask of folder/masks (same relative name, any image suffix)."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    for part in (images_dir, masks_dir):
        if not part.is_dir():
            raise ConvlabError(f"{part} not found; {HINT}")
    # a .png mask wins over another suffix of the same name (sorted last, so it is the one kept)
    by_name = {mask.relative_to(masks_dir).with_suffix(""): mask
               for mask in sorted(list_images(masks_dir), key=lambda mask: mask.suffix.lower() == ".png")}
    images = list_images(images_dir)
    missing = [image for image in images if image.relative_to(images_dir).with_suffix("") not in by_name]
    if missing:
        raise ConvlabError(f"image {missing[0]} has no mask in {masks_dir} (looked for "
                           f"{missing[0].relative_to(images_dir).with_suffix('.png')}; {len(missing)} of "
                           f"{len(images)} images have none); add the masks or move those images out")
    items = []
    for image_id, image in enumerate(images, first_id):
        item = _masked(image, by_name[image.relative_to(images_dir).with_suffix("")], image_id, checker, issues)
        items += [item] if item is not None else []
    return items


def _masked(image: Path, mask_path: Path, image_id: int, checker: Checker, issues: list[dict]) -> Masked | None:
    """The image and its mask, checked for size; None (with an issue) when either cannot be read."""
    size = checker.image_size(image)  # (width, height) as displayed, from the header
    if size is None:
        return None
    try:
        mask = read_mask(mask_path)
    except UnreadableImage as err:
        issues.append({"path": str(mask_path), "problem": err.reason})
        return None
    if mask.shape[::-1] != size:
        raise ConvlabError(f"mask {mask_path} is {mask.shape[1]} x {mask.shape[0]} pixels but its image {image} "
                           f"is {size[0]} x {size[1]}; a mask must match its image pixel for pixel (resize it "
                           f"with nearest-neighbour or export it again)")
    return Masked(image, mask, image_id=image_id)


def read_mask(path: Path) -> np.ndarray:
    """A class-index mask file -> (H, W) uint8, IGNORE (255) kept; values outside 0-255 (16-bit masks) are
    refused. A palette (P) PNG gives its indices, not its colours; a 1-bit mask gives 0 and 1. A file that cannot
    be decoded raises UnreadableImage (the reader skips and lists it, as an unreadable image)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            values = np.asarray(image) if mode in MODES else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UnreadableImage(path, str(err)) from None
    if values is None:
        raise ConvlabError(f"mask {path} is a {mode} image; a mask holds one class index per pixel: save it as a "
                           f"palette (P) or gray (L) PNG")
    outside = values[(values < 0) | (values > IGNORE)]  # a 16- or 32-bit mask's
    if outside.size:
        raise ConvlabError(f"mask {path} holds the value {int(outside[0])}, outside 0-255; a mask holds class "
                           f"indices 0-254 (255 ignored): save it as an 8-bit palette or gray PNG")
    return values.astype(np.uint8)


def _check_indices(item: Masked, classes: list[str], names_file: Path) -> None:
    """A class index the names do not name is refused, naming the mask's image, the value and the names file."""
    present = np.flatnonzero(np.bincount(item.mask.ravel(), minlength=256))
    unknown = [int(v) for v in present if len(classes) <= v != IGNORE]
    if unknown:
        raise ConvlabError(f"the mask of {item.path} holds class index {unknown[0]} but {names_file} names "
                           f"{len(classes)} classes (0-{len(classes) - 1}, 255 ignored); fix the mask or add the "
                           f"class's name")


def _numbered(splits: dict[str, list[Masked]], root: Path, notes: list[str]) -> list[str]:
    """background, class1, ... up to the largest index in the masks (IGNORE aside; two classes at least)."""
    top = max((int(item.mask[item.mask != IGNORE].max(initial=0)) for items in splits.values() for item in items),
              default=0)
    classes = ["background", *(f"class{i}" for i in range(1, max(top, 1) + 1))]
    notes.append(f"no classes.txt or data.yaml in {root}: the classes are named {', '.join(classes[:4])}"
                 f"{', ...' if len(classes) > 4 else ''} (the largest index in the masks is {top}); write the "
                 f"names one per line into {root / 'classes.txt'}")
    return classes


def _only_ignore(splits: dict[str, list[Masked]]) -> list[str]:
    """A note when the masks hold 0 and 255 only: 255 is no class here, though some tools mark objects with it."""
    values = set()
    for item in (item for items in splits.values() for item in items):
        values.update(np.flatnonzero(np.bincount(item.mask.ravel(), minlength=256)).tolist())
    if IGNORE in values and values <= {0, IGNORE}:
        return [("the masks hold only 0 and 255, and 255 marks pixels left out (ignored); if 255 marks the "
                 "objects, save them as 1")]
    return []


register(Format("masks", "masks:DIR", read))
