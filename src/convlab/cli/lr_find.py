"""`convlab lr-find`: the learning-rate finder on the config a train (or, with --from, a fine-tune) would run."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConvlabError
from .common import add_config_flags, config_keys

SECTIONS = ("data", "model", "optim", "train", "finetune")
EXCLUDED = {"out", "lr"}  # --out is the plot here; the rate is what the ramp varies
DEFAULT_PLOT = "lr_find.png"


def add_commands(sub: argparse._SubParsersAction) -> None:
    lf = sub.add_parser("lr-find", help="suggest a learning rate: ramp it up over a short test and plot the loss",
                        description="The learning-rate range test (fastai's lr_find): build the run's data, model, "
                                    "loaders, optimizer and task step exactly as train (or, with --from, "
                                    "finetune) would, raise the rate exponentially from --start-lr to --end-lr "
                                    "over --steps batches, stop once the smoothed loss passes 4x its minimum, and "
                                    "print the suggested rates (valley, the one to use, and steepest descent). "
                                    "Writes the plot and nothing else: no run folder, no weights. Takes train's "
                                    "flags (and finetune's, with --from); a fine-tune ramps its first stage. To "
                                    "train with the suggestion at once: convlab train --lr find.")
    lf.add_argument("--config", metavar="FILE.yaml", help="YAML settings applied before the flags")
    lf.add_argument("--out", metavar="FILE.png", default=DEFAULT_PLOT,
                    help=f"where the loss-vs-rate plot is written (default: {DEFAULT_PLOT} in the current folder)")
    lf.add_argument("--steps", metavar="N", type=int, default=None,
                    help="batches in the ramp, one rate each, 10 to 1000 (default: 100)")
    lf.add_argument("--start-lr", metavar="X", type=float, default=None, help="the first rate (default: 1e-07)")
    lf.add_argument("--end-lr", metavar="X", type=float, default=None, help="the last rate (default: 10)")
    add_config_flags(lf, SECTIONS, renamed={"source": "--from"}, exclude=EXCLUDED)
    lf.set_defaults(func=cmd_lr_find)


def cmd_lr_find(args) -> int:
    from rich.console import Console  # lazy: start-up time

    from ..evaluate.lr_plot import plot_lr_find, show_finding  # lazy: start-up time
    from ..finetune import finetune_job  # lazy: start-up time
    from ..pipeline import ensure_writable, find_lr, train_job  # lazy: start-up time
    from ..training.lr_find import Ramp  # lazy: start-up time

    given = {"start": args.start_lr, "end": args.end_lr, "steps": args.steps}
    ramp = Ramp(**{name: value for name, value in given.items() if value is not None}).check()
    plot = Path(args.out).expanduser()
    if plot.suffix.lower() != ".png":
        raise ConvlabError(f"invalid value for --out: {args.out}; give a FILE.png for the plot")
    ensure_writable(plot.parent, "the plot's folder", "pass --out FILE.png in a writable folder")
    overrides = {key: getattr(args, key) for key in config_keys(SECTIONS) if key not in EXCLUDED}
    source = overrides.pop("source")
    console = Console(highlight=False, soft_wrap=True)
    if source is None:
        job = train_job(args.config, console=console, **overrides)
    else:
        job = finetune_job(source, args.config, console=console, **overrides)
    finding = find_lr(job, ramp)
    suggestions = finding.suggestions()
    show_finding(console, finding, suggestions)
    plot_lr_find(finding, suggestions, plot)
    console.print(f"plot: {plot}", markup=False)
    return 0
