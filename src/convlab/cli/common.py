"""Shared CLI pieces: the parser class that fails in one line, and flags generated from the config."""
from __future__ import annotations

import argparse
import typing

from .. import config as cfg
from ..errors import ConvlabError
from ..training.resume import CHANGEABLE


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] = cfg.TRAIN_SECTIONS,
                     renamed: dict[str, str] | None = None, exclude: set[str] = frozenset(),
                     words: dict[str, tuple[typing.Callable, str]] | None = None) -> None:
    """One flag per config field, with the field's type, choices and help: the config is the single source.

    `renamed` gives a key another flag name (finetune's `source` is `--from`); `--source` works too.
    `exclude` leaves out fields a command defines differently (e.g. tune's --out is the study folder).
    `words` gives a key a parser that also takes a word the CLI handles before the config is checked, and the
    help that says so (train's `--lr find`): key -> (parse function, help appended).
    """
    for key in config_keys(sections):
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
                   "image_size": "SIZE", "classes": "NAMES", "source": "SOURCE",
                   "weights": "WEIGHTS", "freeze": "GROUPS", "checkpoint_every": "STEPS",
                   "dist_timeout": "SECONDS"}.get(key, {int: "N", float: "X"}.get(base))
        if "default" not in help_text:
            help_text += f" (default: {_default_text(key)})"
        parse = base
        if key in (words or {}):
            parse, extra = words[key]
            help_text += extra
        flags = [(renamed or {}).get(key, cfg.flag(key))]
        flags += [cfg.flag(key)] if flags[0] != cfg.flag(key) else []
        parser.add_argument(*flags, dest=key, type=parse, choices=options, default=None, metavar=metavar,
                            help=help_text)
        if key == "task":  # the word users look for: a file with one label per row can train multi-label too
            parser.add_argument("--multi-label", dest=key, action="store_const", const="multilabel",
                                help="several labels per image, a sigmoid each: the same as --task multilabel "
                                     "(inferred for a csv: file with several labels in a row)")


def resume_help(what: str) -> str:
    """--resume's help, naming the flags training/resume.py lets a resumed run change."""
    flags = [cfg.flag(key) for key in cfg.FLAT_KEYS if key in CHANGEABLE and key != "out"]
    return (f"continue {what} from its last checkpoint; only {', '.join(flags[:-1])} and {flags[-1]} may change "
            f"(--epochs only up, with --schedule none; --out, if given, must be RUN_DIR)")


def config_keys(sections: tuple[str, ...] = cfg.TRAIN_SECTIONS) -> list[str]:
    """The flat config keys of these sections, in the config's order."""
    return [key for key, (section, _) in cfg.FLAT_KEYS.items() if section in sections]


def _default_text(key: str) -> str:
    section, name = cfg.FLAT_KEYS[key]
    default = getattr(getattr(cfg.Config(), section), name)
    recipe_keys = {"model", "optimizer", "lr", "schedule", "epochs", "batch_size", "augment", "weight_decay",
                   "momentum"}
    return "the dataset's recipe" if key in recipe_keys else str(default)


FIND = "find"  # --lr find: the learning-rate finder picks the rate


def lr_or_find(text: str) -> float | str:
    """--lr on train and finetune: a number, or the word find (the config's lr is a float, checked later)."""
    if text == FIND:
        return FIND
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate; give a number (e.g. 0.001) or find (run the "
                                         f"learning-rate finder first and train with its suggestion)") from None


LR_FIND = {"lr": (lr_or_find, "; find: run the learning-rate finder first (convlab lr-find) and train with its "
                              "valley suggestion")}


def take_find(overrides: dict, resume) -> bool:
    """Whether `--lr find` was given. The word leaves the overrides (the config's lr stays a float: the recipe's
    until the finder sets it); a resumed run keeps its own rate."""
    if overrides.get("lr") != FIND:
        return False
    if resume:
        raise ConvlabError("--lr find starts a new run; a resumed run keeps its saved rate (leave out --lr)")
    overrides["lr"] = None
    return True
