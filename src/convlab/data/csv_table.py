"""Images listed in a CSV file: a path column and a label column (one label per row, or several for multi-label)."""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConvlabError
from .arrays import ImageArrays, Splits
from .decode import GRAYSCALE_MODES, UnreadableImage
from .imagefolder import DEFAULT_FOLDER_SIZE, TEST_FRACTION, _decode_all, peek_modes
from .registry import register_also, register_dataset
from .splits import stratified_split

# Header names (case-insensitive) in order of preference: the first one the header has is the column used.
PATH_COLUMNS = ("path", "image", "file", "filename", "image_path", "img", "fname")
LABEL_COLUMNS = ("labels", "label", "tags", "tag", "classes", "class", "target", "category")
SPLIT_COLUMN = "split"
# A split cell -> the split its row joins: validation is carved out of train later by --val-fraction.
SPLIT_VALUES = {"train": "train", "val": "train", "valid": "train", "validation": "train", "test": "test"}
VAL_VALUES = ("val", "valid", "validation")
LABEL_SEPARATORS = re.compile(r"[\s;]+")  # several labels in one cell: "cat dog" or "cat;dog"
HOLDOUT_SEED = 0  # the test rows held out when the file has no split column (as for image folders)


@dataclass(frozen=True)
class CsvRow:
    line: int  # 1-based line of the CSV file, the header being line 1
    cell: str  # the path as the CSV gives it
    path: Path  # resolved against IMAGES_DIR or the CSV's folder
    labels: tuple[str, ...]  # distinct, in the order given
    split: str  # "train" or "test"; "train" when the file has no split column
    marked: str  # the split cell as written ("" without a split column)


@dataclass
class CsvTable:
    """The rows of a CSV dataset as text: nothing here has opened an image."""

    file: Path
    images_dir: Path | None  # IMAGES_DIR after the comma; None: paths are relative to the CSV's folder
    label_column: str  # as the header spells it
    rows: list[CsvRow]
    has_split: bool

    @property
    def classes(self) -> list[str]:
        return sorted({label for row in self.rows for label in row.labels})

    @property
    def first_multi(self) -> CsvRow | None:
        """The first row with several labels (None: one label per row)."""
        return next((row for row in self.rows if len(row.labels) > 1), None)

    def where(self, row: CsvRow) -> str:
        return f"CSV file {self.file} line {row.line}"


def split_argument(arg: str | None) -> tuple[Path, Path | None]:
    """'FILE' or 'FILE,IMAGES_DIR' -> (FILE, IMAGES_DIR or None). A FILE whose name holds a comma is taken whole
    when it exists."""
    if not arg:
        raise ConvlabError("--data csv needs a CSV file: --data csv:FILE or --data csv:FILE,IMAGES_DIR")
    whole = Path(arg).expanduser()
    if "," not in arg or whole.is_file():
        return whole, None
    file, _, images_dir = arg.rpartition(",")
    return Path(file).expanduser(), Path(images_dir).expanduser() if images_dir.strip() else None


def read_csv_table(arg: str | None) -> CsvTable:
    """Parse csv:FILE[,IMAGES_DIR]: find the columns, resolve the paths, split the labels; ConvlabError naming the
    file and line for anything wrong in the text. Image files are not looked at (see check_images_exist)."""
    file, images_dir = split_argument(arg)
    if not file.is_file():
        raise ConvlabError(f"CSV file {file} does not exist or is not a file; pass --data csv:FILE or "
                           "csv:FILE,IMAGES_DIR with a CSV that has a path column and a label column")
    if images_dir is not None and not images_dir.is_dir():
        raise ConvlabError(f"images folder {images_dir} (after the comma in --data csv:{arg}) does not exist or is "
                           "not a folder; give the folder that the CSV's image paths are relative to")
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            return _read_rows(reader, file, images_dir)
    except UnicodeDecodeError as err:
        raise ConvlabError(f"CSV file {file} is not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                           "UTF-8 CSV") from None


def _read_rows(reader, file: Path, images_dir: Path | None) -> CsvTable:
    try:
        header = next((row for row in reader if any(cell.strip() for cell in row)), None)
        if header is None:
            raise ConvlabError(f"CSV file {file} is empty; its first line must be a header naming a path column "
                               "and a label column (e.g. path,label)")
        header_line = reader.line_num
        names = [cell.strip().lower() for cell in header]
        path_at = _column(names, PATH_COLUMNS, "path", header, file, header_line)
        label_at = _column(names, LABEL_COLUMNS, "label", header, file, header_line)
        split_at = names.index(SPLIT_COLUMN) if SPLIT_COLUMN in names else None
        base = images_dir if images_dir is not None else file.parent
        rows = []
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # a blank line
            rows.append(_row(cells, reader.line_num, path_at, label_at, split_at, header, base, file))
    except csv.Error as err:
        raise ConvlabError(f"CSV file {file} line {reader.line_num}: {err}; check the quoting of that line") from None
    if not rows:
        raise ConvlabError(f"CSV file {file} has a header but no rows; add one row per image "
                           f"({header[path_at].strip()},{header[label_at].strip()})")
    return CsvTable(file, images_dir, header[label_at].strip(), rows, split_at is not None)


def _column(names: list[str], accepted: tuple[str, ...], kind: str, header: list[str], file: Path,
            line: int) -> int:
    """The index of the first accepted name the header has."""
    for name in accepted:
        if name in names:
            return names.index(name)
    found = ", ".join(cell.strip() for cell in header)
    raise ConvlabError(f"CSV file {file} line {line}: no {kind} column among the header's columns ({found}); "
                       f"name the column one of: {', '.join(accepted)}")


def _row(cells: list[str], line: int, path_at: int, label_at: int, split_at: int | None, header: list[str],
         base: Path, file: Path) -> CsvRow:
    def cell(index: int) -> str:
        return cells[index].strip() if index < len(cells) else ""

    where = f"CSV file {file} line {line}"
    path_cell, label_cell = cell(path_at), cell(label_at)
    if not path_cell:
        raise ConvlabError(f"{where}: the {header[path_at].strip()} cell is empty; give the image's path or "
                           "remove the row")
    labels = tuple(dict.fromkeys(part for part in LABEL_SEPARATORS.split(label_cell) if part))
    if not labels:
        raise ConvlabError(f"{where}: the {header[label_at].strip()} cell of {path_cell} is empty; give at least "
                           "one label (several separated by spaces or ';') or remove the row")
    split, marked = "train", ""
    if split_at is not None:
        marked = cell(split_at)
        if marked.lower() not in SPLIT_VALUES:
            raise ConvlabError(f"{where}: unknown split '{marked}' in the {header[split_at].strip()} column; use "
                               f"{', '.join(SPLIT_VALUES)}")
        split = SPLIT_VALUES[marked.lower()]
    path = Path(path_cell).expanduser()
    return CsvRow(line, path_cell, path if path.is_absolute() else base / path, labels, split, marked)


def check_images_exist(table: CsvTable) -> None:
    """Every row's image must be a file: the first that is not is an error, with how many more are missing."""
    missing = [row for row in table.rows if not row.path.is_file()]
    if not missing:
        return
    row = missing[0]
    if table.images_dir is not None:
        relative = f"relative paths are read from IMAGES_DIR {table.images_dir}, given after the comma"
    else:
        relative = (f"relative paths are read from the CSV's folder {table.file.parent}; pass --data "
                    f"csv:{table.file},IMAGES_DIR when the images are elsewhere")
    more = f"; {len(missing) - 1} more rows' images are missing too" if len(missing) > 1 else ""
    raise ConvlabError(f"{table.where(row)}: image {row.cell} not found at {row.path} ({relative}){more}")


def infer_csv_task(arg: str | None) -> str:
    """'multilabel' when some row of the CSV has several labels, else 'classify' (reads the CSV text only)."""
    return "classify" if read_csv_table(arg).first_multi is None else "multilabel"


def load_csv_table(table: CsvTable, image_size: int | None, multi_label: bool) -> Splits:
    """Decode the table's images into Splits: labels (N,) int64, or (N, classes) uint8 multi-hot.

    Images become (C, S, S) uint8 with S = image_size or DEFAULT_FOLDER_SIZE; C is 1 when every image is
    grayscale, else 3. Rows marked test are the test split; without any, a seeded 20% is held out (stratified
    for one label per row). Unreadable images are skipped and listed in `splits.issues`.
    """
    classes = table.classes
    if not multi_label:
        _check_single_label(table, classes)
    if not any(row.split == "train" for row in table.rows):
        raise ConvlabError(f"CSV file {table.file} line {table.rows[0].line}: every row's split is test; mark the "
                           "rows to train on 'train'")
    check_images_exist(table)
    size = image_size or DEFAULT_FOLDER_SIZE
    files = list(dict.fromkeys(row.path for row in table.rows))  # an image listed twice is decoded once
    modes, issues = peek_modes(files)
    channels = 1 if all(mode in GRAYSCALE_MODES for mode in modes.values()) else 3
    decoded = _decode_all([path for path in files if path in modes], channels, size)
    issues += [item for item in decoded.values() if isinstance(item, UnreadableImage)]
    rows = [row for row in table.rows if isinstance(decoded.get(row.path), np.ndarray)]
    _check_classes_left(table, classes, rows, issues)

    notes = [f"csv: {len(classes)} classes, {len(rows)} images as {channels} x {size} x {size} from {table.file}"]
    images = (np.stack([decoded[row.path] for row in rows]) if rows
              else np.zeros((0, channels, size, size), np.uint8))  # (N, C, size, size)
    labels = _label_array(rows, classes, multi_label)
    train_index, test_index = _split_rows(table, rows, labels, multi_label, notes)
    return Splits(name="csv", train=ImageArrays(images[train_index], labels[train_index]),
                  test=ImageArrays(images[test_index], labels[test_index]), classes=classes, hflip=True,
                  notes=notes, issues=[{"path": str(err.path), "problem": err.reason}
                                       for err in sorted(issues, key=lambda err: str(err.path))])


def _check_single_label(table: CsvTable, classes: list[str]) -> None:
    multi = table.first_multi
    if multi is not None:
        raise ConvlabError(f"{table.where(multi)}: several labels in one row ({' '.join(multi.labels)}): the file "
                           "is multi-label; leave out --task classify (or pass --multi-label) to train a "
                           "multi-label model, or give each row one label")
    if len(classes) < 2:
        raise ConvlabError(f"CSV file {table.file} line {table.rows[0].line}: every row's {table.label_column} is "
                           f"'{classes[0]}'; a classifier needs at least 2 classes, so label some rows otherwise")


def _check_classes_left(table: CsvTable, classes: list[str], rows: list[CsvRow],
                        issues: list[UnreadableImage]) -> None:
    """After skipping unreadable images, every class still needs an image, and a test split marked in the file
    still needs one."""
    left = {label for row in rows for label in row.labels}
    for name in classes:
        if name not in left:
            first = next(row for row in table.rows if name in row.labels)
            example = next((str(err) for err in issues if err.path == first.path), "")
            raise ConvlabError(f"{table.where(first)}: none of the images labelled '{name}' could be read (e.g. "
                               f"{example}); replace them or remove their rows")
    marked_test = any(row.split == "test" for row in table.rows)
    if marked_test and not any(row.split == "test" for row in rows):
        raise ConvlabError(f"CSV file {table.file}: none of the images of the rows marked test could be read; "
                           "replace them, or remove the split column to hold out part of the rows instead")


def _label_array(rows: list[CsvRow], classes: list[str], multi_label: bool) -> np.ndarray:
    """(N,) int64 class indices, or (N, classes) uint8 0/1 for multi_label."""
    index = {name: i for i, name in enumerate(classes)}
    if not multi_label:
        return np.asarray([index[row.labels[0]] for row in rows], dtype=np.int64)
    hot = np.zeros((len(rows), len(classes)), np.uint8)
    for i, row in enumerate(rows):
        hot[i, [index[label] for label in row.labels]] = 1
    return hot


def _split_rows(table: CsvTable, rows: list[CsvRow], labels: np.ndarray, multi_label: bool,
                notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) sorted row indices: the rows marked test, else a seeded share held out."""
    val_rows = sum(1 for row in rows if row.marked.lower() in VAL_VALUES)
    if val_rows:
        notes.append(f"csv: the {val_rows} rows marked val in {table.file} are trained on; validation is "
                     "--val-fraction of the training rows, as for image folders")
    is_test = np.asarray([row.split == "test" for row in rows], dtype=bool)
    if is_test.any():
        notes.append(f"csv: {int((~is_test).sum())} training rows, {int(is_test.sum())} test rows marked in "
                     f"{table.file}")
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)
    where = "no split column" if not table.has_split else "no rows marked test"
    if multi_label:
        notes.append(f"csv: {where} in {table.file}; holding out a seeded random {TEST_FRACTION:.0%} of the rows "
                     "as the test set")
        order = np.random.default_rng(HOLDOUT_SEED).permutation(len(rows))
        held = math.ceil(TEST_FRACTION * len(rows))
        return np.sort(order[held:]), np.sort(order[:held])
    notes.append(f"csv: {where} in {table.file}; holding out a stratified {TEST_FRACTION:.0%} of the rows as the "
                 "test set")
    return stratified_split(labels, TEST_FRACTION, HOLDOUT_SEED)


@register_dataset(
    "csv",
    description="images listed in a CSV with a path and a label column: csv:FILE or csv:FILE,IMAGES_DIR",
    takes_argument=True,
    infer_task=infer_csv_task,
)
def load_csv(data_dir: Path | None, arg: str | None, image_size: int | None) -> Splits:
    """csv:FILE[,IMAGES_DIR] with one label per row: labels (N,) int64. A file with several labels in a row is
    refused (it is for the multilabel task). data_dir is not used: FILE is read as given, as infer_task reads it."""
    return load_csv_table(read_csv_table(arg), image_size, multi_label=False)


@register_also("csv", "multilabel",
               description="images listed in a CSV, several labels per row separated by spaces or ';'")
def load_csv_multilabel(data_dir: Path | None, arg: str | None, image_size: int | None) -> Splits:
    """csv:FILE[,IMAGES_DIR] for the multilabel task: labels (N, classes) uint8 multi-hot."""
    return load_csv_table(read_csv_table(arg), image_size, multi_label=True)
