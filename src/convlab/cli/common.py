"""Shared CLI pieces: the parser class that fails in one line, and flags generated from the config."""
from __future__ import annotations

import argparse
import typing

from .. import config as cfg


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_config_flags(parser: argparse.ArgumentParser, exclude: set[str] = frozenset()) -> None:
    """One flag per config field, with the field's type, choices and help: the config is the single source.

    `exclude` leaves out fields a command defines differently (e.g. tune's --out is the study folder).
    """
    for key in cfg.FLAT_KEYS:
        if key in exclude:
            continue
        info = cfg.field_info(key)
        kind = cfg.field_type(key)
        help_text = info.metadata["help"]
        if kind is bool:
            parser.add_argument(cfg.flag(key), dest=key, action="store_const", const=True, default=None,
                                help=help_text)
            continue
        options = cfg.choices(key)
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind) if options is None else str
        metavar = {"data": "NAME", "model": "NAME", "data_dir": "DIR", "out": "DIR", "early_stop": "PATIENCE",
                   "image_size": "SIZE"}.get(key, {int: "N", float: "X"}.get(base))
        if "default" not in help_text:
            help_text += f" (default: {_default_text(key)})"
        parser.add_argument(cfg.flag(key), dest=key, type=base, choices=options, default=None, metavar=metavar,
                            help=help_text)


def _default_text(key: str) -> str:
    section, name = cfg.FLAT_KEYS[key]
    default = getattr(getattr(cfg.Config(), section), name)
    recipe_keys = {"model", "optimizer", "lr", "schedule", "epochs", "batch_size", "augment", "weight_decay",
                   "momentum"}
    return "the dataset's recipe" if key in recipe_keys else str(default)
