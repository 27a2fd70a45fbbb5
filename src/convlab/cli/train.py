"""`convlab train`."""
from __future__ import annotations

import argparse

from .common import LR_FIND, add_config_flags, config_keys, resume_help, take_find


def add_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model and write a run folder",
                           description="Train a CNN. Settings come from the dataset's recipe, then --config FILE, "
                                       "then flags; the resolved config is printed and saved in the run folder.")
    train.add_argument("--config", metavar="FILE.yaml", help="YAML settings applied before the flags")
    train.add_argument("--resume", metavar="RUN_DIR", help=resume_help("an interrupted run, with its saved settings,"))
    add_config_flags(train, words=LR_FIND)
    train.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from ..pipeline import run_pipeline, train_job, use_found_lr  # lazy: start-up time

    overrides = {key: getattr(args, key) for key in config_keys()}
    find = take_find(overrides, args.resume)
    job = train_job(args.config, resume=args.resume, **overrides)
    if find:
        use_found_lr(job)
    run_pipeline(job)
    return 0
