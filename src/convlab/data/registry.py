"""The dataset registry: names -> loaders, their known shapes and default training recipes."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from ..errors import ConvlabError
from .arrays import Splits
from .conform import resize_arrays

# A loader gets the data directory (None: use the cache/download), the argument after
# "name:" (e.g. the path of imagefolder:PATH) and the requested image size (None: native).
Loader = Callable[[Path | None, str | None, int | None], Splits]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Loader
    description: str
    shape: tuple[int, int, int] | None  # (C, H, W) when fixed by the format
    num_classes: int | None
    recipe: dict = field(default_factory=dict)  # flat config keys -> defaults for this dataset
    takes_argument: bool = False  # "imagefolder:PATH"
    streams: bool = False  # the loader takes loader="auto"|"memory"|"streaming" (decoded-image cache)
    task: str = "classify"  # the task its labels are for (tasks/); a detection loader gets (data_dir, arg, seed)
    also: dict = field(default_factory=dict)  # other tasks the same files serve -> their entry (COCO: segment)
    infer_task: Callable[[str | None], str] | None = None  # the task the files' labels call for (a CSV's rows)

    def task_for(self, arg: str | None) -> str:
        """The task these files are for when --task is not given: the entry's, or what its files say."""
        return self.task if self.infer_task is None else self.infer_task(arg)

    def for_task(self, task: str | None) -> "DatasetEntry":
        """The entry that reads these files for `task` (None: its own task): its loader and recipe."""
        return self if task in (None, self.task) else self.also[task]

    @property
    def tasks(self) -> list[str]:
        return [self.task, *self.also]


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, *, description: str, shape=None, num_classes=None, recipe=None,
                     takes_argument: bool = False, streams: bool = False, task: str = "classify", infer_task=None):
    """Decorator: register `loader` under `name`; `infer_task(arg)` reads the task from the files when their
    labels decide it (a CSV with several labels in a row is multi-label)."""

    def wrap(loader: Loader) -> Loader:
        DATASETS[name] = DatasetEntry(name, loader, description, shape, num_classes,
                                      dict(recipe or {}), takes_argument, streams, task, infer_task=infer_task)
        return loader

    return wrap


def register_also(name: str, task: str, *, description: str, recipe=None):
    """Decorator: let the registered dataset `name` serve `task` too, read by `loader` with its own recipe
    (COCO files hold boxes and masks: `--data coco:... --task segment` reads the masks)."""

    def wrap(loader: Loader) -> Loader:
        own = DATASETS[name]
        own.also[task] = DatasetEntry(name, loader, description, None, None, dict(recipe or {}),
                                      own.takes_argument, False, task)
        return loader

    return wrap


def parse_data_name(spec: str) -> tuple[DatasetEntry, str | None]:
    """Split 'imagefolder:PATH' into its entry and argument; unknown names get suggestions."""
    name, _, arg = spec.partition(":")
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConvlabError(f"unknown dataset '{spec}' for --data.{hint} Run 'convlab datasets' to list them.")
    entry = DATASETS[name]
    if entry.takes_argument and not arg:
        raise ConvlabError(f"--data {name} needs a path: --data {name}:PATH")
    if arg and not entry.takes_argument:
        raise ConvlabError(f"--data {name} takes no ':' argument (got '{spec}'); use --data-dir for its files")
    return entry, arg or None


def load_dataset(spec: str, data_dir: str | Path | None = None, image_size: int | None = None,
                 strict: bool = False, loader: str = "auto", task: str | None = None) -> Splits:
    """Load a registered dataset by name; resize to image_size x image_size when given. `task` picks the loader
    of files that serve several tasks (a csv: file's multi-label rows); None: the entry's own.

    Unreadable files that a loader skipped are listed in `splits.issues`; with strict=True the first
    one is an error instead. loader (auto, memory, streaming) reaches the datasets that can stream
    from a decoded-image cache.
    """
    entry, arg = parse_data_name(spec)
    if task in entry.also:
        entry = entry.for_task(task)
    directory = Path(data_dir).expanduser() if data_dir else None
    if directory is not None and not directory.is_dir():
        raise ConvlabError(f"--data-dir {directory} does not exist or is not a folder")
    splits = entry.loader(directory, arg, image_size, loader=loader) if entry.streams else \
        entry.loader(directory, arg, image_size)
    if strict and splits.issues:
        first = splits.issues[0]
        raise ConvlabError(f"cannot read image {first['path']}: {first['problem']} (--strict stops at the first "
                           "unreadable file; remove or replace it, or train without --strict to skip such files)")
    if image_size and splits.shape[1:] != (image_size, image_size):
        splits.train = resize_arrays(splits.train, image_size)
        splits.test = resize_arrays(splits.test, image_size)
    return splits


def list_datasets() -> list[DatasetEntry]:
    """Every registered dataset. The built-ins are registered by the package's __init__, which Python
    runs before this module is reachable, so they are always here."""
    return list(DATASETS.values())
