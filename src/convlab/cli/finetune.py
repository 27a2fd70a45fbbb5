"""`convlab finetune`."""
from __future__ import annotations

import argparse

from .common import LR_FIND, add_config_flags, config_keys, resume_help, take_find

SECTIONS = ("data", "model", "optim", "train", "finetune")


def add_commands(sub: argparse._SubParsersAction) -> None:
    ft = sub.add_parser("finetune", help="fine-tune a pretrained model (a run, torchvision:NAME, timm:NAME)",
                        description="Fine-tune a pretrained model on new data: the head is rebuilt for the new "
                                    "classes and trained by --strategy (default two-stage: the head first, then "
                                    "everything with a lower backbone lr). Takes train's flags too; the run "
                                    "folder is the same as train's.")
    ft.add_argument("--config", metavar="FILE.yaml", help="YAML settings applied before the flags")
    ft.add_argument("--resume", metavar="RUN_DIR",
                    help=resume_help("an interrupted fine-tune, in the freeze state of its stage,"))
    add_config_flags(ft, SECTIONS, renamed={"source": "--from"}, words=LR_FIND)
    ft.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> int:
    from ..finetune import finetune_job  # lazy: start-up time
    from ..pipeline import run_pipeline, use_found_lr  # lazy: start-up time

    overrides = {key: getattr(args, key) for key in config_keys(SECTIONS)}
    source = overrides.pop("source")  # the first argument of convlab.finetune
    find = take_find(overrides, args.resume)
    job = finetune_job(source, args.config, resume=args.resume, **overrides)
    if find:
        use_found_lr(job)
    run_pipeline(job)
    return 0
