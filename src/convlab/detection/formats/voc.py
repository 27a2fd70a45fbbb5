"""Pascal VOC XML: `voc:DIR` with Annotations/*.xml, JPEGImages/ and ImageSets/Main/ split lists, read and written.

VOC's xmin, ymin are 1-based pixel indices and xmax, ymax the last pixel (inclusive): in convlab's pixel
corners x1 = xmin - 1, x2 = xmax. A `difficult` object is read as iscrowd = 1, so COCO evaluation ignores it
(neither found nor missed) as VOC's own evaluation ignores difficult objects; it is written back as difficult.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import ConvlabError
from ..checks import Checker
from ..targets import Annotated, DetectionSet
from ._base import Format, Found, file_names, need, number, place, register

HINT = "give voc:DIR with Annotations/, JPEGImages/ and ImageSets/Main/{train,val,trainval,test}.txt"
LISTS = ("train", "val", "trainval", "test")


def read(path: Path, extra: list[str], checker: Checker) -> Found:
    if extra:
        raise ConvlabError(f"voc:{path},{','.join(extra)}: a VOC spec has no extra fields; {HINT}")
    annotations = need(path / "Annotations", "VOC annotations folder", HINT)
    lists = _lists(path, annotations)
    train, test = _roles(lists)
    parsed = {name: [_parse(annotations / f"{stem}.xml", path) for stem in lists[name]]
              for name in (train, test) if name}
    classes = _classes(path, parsed)
    index = {name: i for i, name in enumerate(classes)}
    splits, image_id = {}, 1
    for name, records in parsed.items():
        splits[name] = []
        for xml, image, objects in records:
            item = _annotated(xml, image, objects, index, checker, image_id)
            splits[name] += [item] if item is not None else []
            image_id += 1
    return Found(path, classes, splits, train, test)


def _lists(root: Path, annotations: Path) -> dict[str, list[str]]:
    """ImageSets/Main/{train,val,trainval,test}.txt -> their image ids; without them, every annotation file."""
    folder = root / "ImageSets" / "Main"
    lists = {name: [line.split()[0] for line in (folder / f"{name}.txt").read_text().splitlines() if line.strip()]
             for name in LISTS if (folder / f"{name}.txt").is_file()}
    return lists or {"trainval": sorted(file.stem for file in annotations.glob("*.xml"))}


def _roles(lists: dict[str, list[str]]) -> tuple[str, str | None]:
    """(train, test): test.txt with trainval.txt (or train.txt), else val.txt with train.txt (or trainval.txt
    less the val ids); one list alone is the only split."""
    test = "test" if "test" in lists else "val" if "val" in lists else None
    train = next((name for name in (("trainval", "train") if test == "test" else ("train", "trainval"))
                  if name in lists), None)
    if train == "trainval" and test == "val":
        held = set(lists["val"])
        lists["trainval"] = [stem for stem in lists["trainval"] if stem not in held]
    return (train, test) if train else (test, None)


def _parse(xml: Path, root: Path) -> tuple[Path, Path, list[tuple[str, bool, list[float]]]]:
    """An annotation file -> (it, its image, [(class name, difficult, [xmin, ymin, xmax, ymax])])."""
    need(xml, "VOC annotation file", f"it is listed in {root / 'ImageSets' / 'Main'}; add it or remove its line")
    try:
        tree = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise ConvlabError(f"{xml} is not valid XML ({err}); fix the file or remove it from the lists") from None
    objects = [(obj.findtext("name", "").strip(), obj.findtext("difficult", "0").strip() == "1",
                [_float(obj.findtext(f"bndbox/{key}")) for key in ("xmin", "ymin", "xmax", "ymax")])
               for obj in tree.iter("object")]
    return xml, _image(root / "JPEGImages", xml.stem, tree.findtext("filename", "").strip()), objects


def _float(text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan  # a missing or unreadable coordinate: the box is dropped by name


def _image(folder: Path, stem: str, file_name: str) -> Path:
    """The XML's <filename> in JPEGImages/, else the file there with the XML's stem (missing: named by the checks)."""
    if file_name and (folder / file_name).is_file():
        return folder / file_name
    return next(iter(sorted(folder.glob(f"{stem}.*"))), folder / (file_name or f"{stem}.jpg"))


def _classes(root: Path, parsed: dict) -> list[str]:
    """labels.txt (one name a line, what convert writes) if present, else the names found, sorted."""
    if (root / "labels.txt").is_file():
        return [line.strip() for line in (root / "labels.txt").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    return sorted({name for records in parsed.values() for _, _, objects in records for name, _, _ in objects})


def _annotated(xml: Path, image: Path, objects: list, index: dict[str, int], checker: Checker,
               image_id: int) -> Annotated | None:
    unknown = next((name for name, _, _ in objects if name not in index), None)
    if unknown is not None:
        raise ConvlabError(f"{xml}: object name {unknown!r} is not in labels.txt ({', '.join(index)}); add it "
                           f"there or fix the name")
    boxes = [[xmin - 1, ymin - 1, xmax, ymax] for _, _, (xmin, ymin, xmax, ymax) in objects]
    return checker.annotated(image, boxes, [index[name] for name, _, _ in objects], source=xml,
                             iscrowd=[difficult for _, difficult, _ in objects], image_id=image_id)


def write(dataset: DetectionSet, out: Path) -> list[str]:
    """JPEGImages/ (one flat folder: names made unique), Annotations/, ImageSets/Main/<train|trainval>.txt and
    <val|test>.txt, labels.txt (the class order)."""
    items = dataset.train + dataset.test
    names = file_names(items)
    for item, file_name in zip(items, names):
        place(item.path, out / "JPEGImages" / file_name)
        (out / "Annotations").mkdir(parents=True, exist_ok=True)
        _xml(item, file_name, dataset.classes).write(out / "Annotations" / f"{Path(file_name).stem}.xml",
                                                     encoding="unicode")
    stems = [Path(name).stem for name in names]
    train = "trainval" if dataset.split_names.get("train") == "trainval" else "train"
    test = "test" if "test" in dataset.split_names.get("test", "test") else "val"
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for name, chosen in ((train, stems[:len(dataset.train)]), (test, stems[len(dataset.train):])):
        (out / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{stem}\n" for stem in chosen))
    (out / "labels.txt").write_text("".join(f"{name}\n" for name in dataset.classes), encoding="utf-8")
    return []


def _xml(item: Annotated, file_name: str, classes: list[str]) -> ET.ElementTree:
    root = ET.Element("annotation")
    _add(root, "folder", "JPEGImages")
    _add(root, "filename", file_name)
    size = _add(root, "size")
    for key, value in (("width", item.width), ("height", item.height), ("depth", 3)):
        _add(size, key, str(value))
    _add(root, "segmented", "0")
    for k in range(len(item)):
        obj = _add(root, "object")
        for key, value in (("name", classes[item.labels[k]]), ("pose", "Unspecified"), ("truncated", "0"),
                           ("difficult", str(int(item.iscrowd[k])))):
            _add(obj, key, value)
        box = _add(obj, "bndbox")
        x1, y1, x2, y2 = item.boxes[k]
        for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            _add(box, key, number(value))
    ET.indent(root)
    return ET.ElementTree(root)


def _add(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = text
    return child


register(Format("voc", "voc:DIR", read, write))
