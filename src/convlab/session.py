"""One training run from config to run folder: data -> model -> fit -> test metrics -> saved run."""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from . import config as cfg
from . import scratch
from .data.arrays import ImageArrays, Splits
from .data.augment import build_augmentation
from .data.batches import BatchLoader, Normalization
from .data.registry import load_dataset, parse_data_name
from .data.streaming import StreamingLoader
from .data.splits import stratified_split
from .data.subsets import select_subset
from .errors import ConvlabError
from .evaluate.plots import PlotProcess, draw_run_plots, start_plot_process
from .models.registry import count_parameters, create_model
from .run import CONFIG, METRICS, Preprocess, Run
from .training.callbacks import BestModel, EarlyStopping, History, PlainLogger, ProgressBar
from .training import distributed, performance
from .training.device import pick_device
from .training.loop import fit
from .training.optim import build_optimizer, build_schedule
from .training.scratch_engine import check_options as check_scratch_options, fit_scratch
from .training.checkpoint import CHECKPOINTS, LAST, Checkpointer, check_free_space, checkpoint_bytes, \
    checkpoint_position
from .training.determinism import deterministic_mode
from .training.numerics import NonFiniteLossGuard
from .training.resume import resume_config

DATA_ISSUES = "data_issues.json"
MAX_ISSUE_LINES = 20  # warnings printed one per file; the rest are in data_issues.json


def recipe_for(data_name: str) -> dict:
    entry, _ = parse_data_name(data_name)
    return entry.recipe


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    scratch.nn.manual_seed(seed)  # dropout in the scratch engine


def train(config: str | Path | None = None, *, console: Console | None = None, resume: str | Path | None = None,
          loss_for=None, callbacks: list | None = None, **overrides) -> Run:
    """Train a model and write its run folder. Keywords are the CLI's flags (data=, model=, epochs=, ...).

    `config` is an optional YAML file applied before the keywords; the dataset's recipe fills the rest.
    `resume` is a run folder whose last checkpoint is continued with the run's saved config.
    `loss_for(model, splits, norm) -> loss_fn` replaces the cross-entropy loss and `callbacks` run
    before the built-in ones (distillation uses both).
    """
    unknown = [k for k in overrides if k not in cfg.FLAT_KEYS]
    if unknown:
        cfg.coerce(unknown[0], overrides[unknown[0]], "convlab.train()")  # raises with a suggestion
    if resume is not None:
        conf = resume_config(resume, overrides, config)
        origin = {key: "flag" if overrides.get(key) is not None else "file" for key in cfg.FLAT_KEYS}
    else:
        conf, origin = cfg.resolve(overrides, config, recipe_for)
    if conf.finetune.source is not None:
        raise ConvlabError(f"the config sets a fine-tuning source ({conf.finetune.source}); use convlab finetune "
                           f"(or convlab.finetune) for it")
    ranks, device = distributed.setup(pick_device(conf.train.device))
    console = console or Console(highlight=False, soft_wrap=True)
    if not ranks.is_main:  # under torchrun only rank 0 prints and writes the run folder
        console = Console(file=open(os.devnull, "w"))
    print_config(console, conf, origin)
    if conf.train.tensorboard:
        from .evaluate.tensorboard import summary_writer_class

        summary_writer_class()  # fail now, not after the data is loaded, when tensorboard is missing
    if not conf.train.deterministic or conf.train.threads:  # --deterministic keeps its fixed thread count
        performance.set_threads(conf.train.threads, device)
    plotter = start_plot_process() if ranks.is_main else None
    try:
        with deterministic_mode(conf.train.deterministic):
            return _train(conf, console, resuming=resume is not None, ranks=ranks, device=device,
                          loss_for=loss_for, extra_callbacks=callbacks, plotter=plotter)
    finally:
        if plotter is not None:
            plotter.close()


def _train(conf: cfg.Config, console: Console, resuming: bool, ranks: distributed.Distributed | None = None,
           device: torch.device | None = None, loss_for=None, extra_callbacks: list | None = None,
           plotter: PlotProcess | None = None) -> Run:
    ranks = ranks or distributed.Distributed()
    device = device or pick_device(conf.train.device)
    seed_everything(conf.train.seed)
    if conf.train.engine == "scratch":
        check_scratch_options(conf, resuming)
        device = torch.device("cpu")
    splits = load_dataset(conf.data.name, conf.data.data_dir, conf.data.image_size, strict=conf.data.strict,
                          loader=conf.data.loader)
    splits = select_subset(splits, conf.data.classes, conf.data.train_per_class, conf.train.seed)
    streamed = isinstance(splits.train.images, np.memmap)  # rows stay in the decoded cache on disk
    if streamed:
        train_set, val_set = splits.train, None
        rows = validation_rows(splits, conf.data.val_fraction, conf.train.seed)
    else:
        train_set, val_set = carve_validation(splits, conf.data.val_fraction, conf.train.seed)
    channels, height, width = splits.shape
    norm = Normalization.of(train_set.images)
    model = create_model(conf.model.name, channels, splits.num_classes, (height, width), conf.model.dropout)
    # Ranks other than 0 keep their checkpoints in a private folder that is removed at the end.
    run_dir = make_run_dir(conf, resuming) if ranks.is_main else Path(tempfile.mkdtemp(prefix="convlab-rank"))
    report_data_issues(console, splits, run_dir)
    check_free_space(run_dir, checkpoint_bytes(model))
    if not resuming:  # saved now, so a run that dies can be resumed from its folder
        cfg.save_config(conf, run_dir / CONFIG, extra={"convlab": {"version": _version()}})
    if streamed:
        n_train, n_val = len(rows[0]), 0 if rows[1] is None else len(rows[1])
    else:
        n_train, n_val = len(train_set), len(val_set) if val_set else 0
    console.print(f"data {splits.name}: {n_train} train / {n_val} val / "
                  f"{len(splits.test)} test images of {channels}x{height}x{width}, {splits.num_classes} classes; "
                  f"model {conf.model.name}: {count_parameters(model):,} parameters; device {device}")

    channels_last = performance.use_channels_last(conf.train.channels_last, model, device)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    trained = performance.maybe_compile(distributed.wrap_model(model, ranks, device), conf.train.compile)
    precision = performance.Precision.for_run(conf.train.amp, device)
    generator = torch.Generator().manual_seed(conf.train.seed)
    augment = build_augmentation(conf.data.augment, min(height, width), splits.hflip)
    if not streamed:
        train_loader = BatchLoader(train_set, conf.train.batch_size, norm, device, shuffle=True, augment=augment,
                                   generator=generator, channels_last=channels_last, rank=ranks.rank,
                                   world_size=ranks.world_size)
        val_loader = BatchLoader(val_set, 512, norm, device, channels_last=channels_last) if val_set else None
    else:
        train_loader = StreamingLoader(train_set.images, train_set.labels, rows[0], conf.train.batch_size, norm,
                                       device, shuffle=True, augment=augment, generator=generator,
                                       channels_last=channels_last, rank=ranks.rank, world_size=ranks.world_size)
        val_loader = None if rows[1] is None else StreamingLoader(train_set.images, train_set.labels, rows[1], 512,
                                                                  norm, device, channels_last=channels_last)
    if ranks.enabled:
        console.print(f"distributed: {ranks.world_size} processes, {train_loader.num_samples} training images "
                      f"each per epoch ({'nccl' if device.type == 'cuda' else 'gloo'})")
    optimizer = build_optimizer(model, conf.optim)
    schedule = build_schedule(optimizer, conf.optim, conf.train.epochs, len(train_loader))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=conf.optim.label_smoothing)
    if loss_for is not None:
        loss_fn = loss_for(model, splits, norm)

    history = History(run_dir / "metrics.csv")
    interactive = console.is_terminal and not conf.train.quiet
    best = BestModel()
    guard = NonFiniteLossGuard(conf.optim.lr, run_dir / CHECKPOINTS)
    callbacks = [*(extra_callbacks or []), guard, ProgressBar(console) if interactive else PlainLogger(console),
                 history, best]
    if ranks.enabled:
        callbacks.insert(0, distributed.AllReduceMetrics(device))
    stateful = {"history": history, "best": best}
    if conf.train.early_stop and val_loader is not None:
        stateful["early_stop"] = EarlyStopping(conf.train.early_stop)
        callbacks.append(stateful["early_stop"])
    elif conf.train.early_stop:
        console.print("note: --early-stop needs a validation split (--val-fraction > 0); it is off")
    if conf.train.tensorboard and ranks.is_main:
        from .evaluate.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(run_dir / "tensorboard", val_loader, splits.classes))
    checkpointer = Checkpointer(run_dir / CHECKPOINTS, schedule, {"data_order": generator}, stateful,
                                resume=resuming, resume_hint=f"convlab train --resume {run_dir}")
    callbacks.append(checkpointer)  # last: it saves what the others have updated
    if resuming:
        record = checkpoint_position(run_dir / CHECKPOINTS / LAST)
        where = f"epoch {record['epoch']}" + (f", batch {record['batch']}" if record["batch"] else "")
        console.print(f"resuming {run_dir} after {where}", markup=False)

    started = time.perf_counter()
    if conf.train.engine == "scratch":  # the NumPy engine trains a twin of `model` and copies its weights back
        state, _ = fit_scratch(model, train_loader, val_loader, conf.optim, conf.train.epochs, callbacks)
    else:
        state = fit(trained, train_loader, val_loader, optimizer, schedule, loss_fn, conf.train.epochs, callbacks,
                    precision=precision)
    train_seconds = time.perf_counter() - started
    distributed.teardown(ranks)
    if not ranks.is_main:
        shutil.rmtree(run_dir, ignore_errors=True)
        return Run(run_dir, model, conf, splits.classes, Preprocess([height, width], channels, norm.mean, norm.std),
                   device=device)
    if state.stopped_early:
        console.print(f"stopped early after epoch {state.epoch}: no better validation accuracy in "
                      f"{conf.train.early_stop} epochs")

    preprocess = Preprocess([height, width], channels, norm.mean, norm.std)
    run = Run(run_dir, model, conf, splits.classes, preprocess, device=device)
    metrics = run.evaluate(arrays=splits.test, classes=splits.classes)
    metrics["train_seconds"] = round(train_seconds, 3)
    metrics["best_epoch"] = state.best_epoch or state.epoch
    metrics["epochs_run"] = state.epoch
    run.metrics = metrics
    write_run(run, history.rows, plotter)
    print_summary(console, run)
    return run


def carve_validation(splits: Splits, fraction: float, seed: int) -> tuple[ImageArrays, ImageArrays | None]:
    """Hold out a stratified, seeded share of train for validation; the test split stays untouched."""
    if fraction <= 0:
        return splits.train, None
    keep, held = validation_rows(splits, fraction, seed)
    return splits.train.subset(keep), splits.train.subset(held)


def validation_rows(splits: Splits, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Row indices of the training split kept for training and held out for validation (None: none)."""
    if fraction <= 0:
        return np.arange(len(splits.train)), None
    keep, held = stratified_split(splits.train.labels, fraction, seed)
    if len(keep) == 0 or len(held) == 0:
        raise ConvlabError(f"--val-fraction {fraction} leaves no training or no validation images "
                           f"({len(splits.train)} training images); change --val-fraction")
    return keep, held


def make_run_dir(conf: cfg.Config, resuming: bool = False) -> Path:
    """Create the run folder before training, so an unwritable place fails now, not after an hour."""
    if conf.train.out:
        path = Path(conf.train.out).expanduser()
        if not resuming and ((path / "model.safetensors").exists() or (path / CONFIG).exists()):
            raise ConvlabError(f"--out {path} already holds a run; choose another folder or remove it first "
                               f"(to continue an interrupted run: convlab train --resume {path})")
    else:
        data = re.sub(r"[^A-Za-z0-9_.-]+", "-", conf.data.name.replace(":", "-")).strip("-")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        model = conf.model.name.replace(":", "-")  # timm:NAME
        path = Path("runs") / f"{data}-{model}-{stamp}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = Path("runs") / f"{data}-{model}-{stamp}-{suffix}"
    ensure_writable(path, "the run folder", "pass --out with a writable folder")
    return path


def ensure_writable(path: Path, what: str, hint: str) -> None:
    """Create `path` and write a probe file in it, so a read-only or missing place fails before any work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConvlabError(f"cannot write {what} {path} ({err.strerror}); {hint}") from None


def _version() -> str:
    import convlab

    return convlab.__version__


def report_data_issues(console: Console, splits: Splits, run_dir: Path) -> None:
    """Warn about each skipped image and write them to data_issues.json in the run folder."""
    issues = getattr(splits, "issues", None)
    if not issues:
        return
    for issue in issues[:MAX_ISSUE_LINES]:
        console.print(f"warning: skipped {issue['path']}: {issue['problem']}", markup=False)
    if len(issues) > MAX_ISSUE_LINES:
        console.print(f"warning: ... and {len(issues) - MAX_ISSUE_LINES} more", markup=False)
    console.print(f"warning: {len(issues)} unreadable images skipped (listed in {run_dir / DATA_ISSUES}; "
                  "--strict makes them an error)", markup=False)
    (run_dir / DATA_ISSUES).write_text(json.dumps({"skipped": len(issues), "files": issues}, indent=1,
                                                  ensure_ascii=False))


def write_run(run: Run, history: list[dict], plotter: PlotProcess | None = None) -> None:
    """Config, weights, metrics and plots; the plots by `plotter`'s child process when there is one."""
    cfg.save_config(run.config, run.path / CONFIG, extra={"convlab": {"version": _version()}})
    run.save_model()
    (run.path / METRICS).write_text(json.dumps(run.metrics, indent=1, ensure_ascii=False))
    if plotter is not None:
        plotter.draw(history, run.metrics["confusion_matrix"], run.classes, run.path)
    else:
        draw_run_plots(history, run.metrics["confusion_matrix"], run.classes, run.path)


def print_config(console: Console, conf: cfg.Config, origin: dict[str, str],
                 sections: tuple[str, ...] = cfg.TRAIN_SECTIONS) -> None:
    """The resolved config, one line per section; values from the recipe, file, flags or source are marked."""
    marks = {"default": "", "recipe": "ʳ", "file": "ᶠ", "flag": "*", "source": "ˢ"}
    legend = "ʳ dataset recipe, ᶠ config file, * flag" + (", ˢ pretrained source" if "source" in
                                                         origin.values() else "")
    console.print(f"config  ({legend})", markup=False)
    flat = conf.flat()
    for section in sections:
        keys = [k for k, (s, _) in cfg.FLAT_KEYS.items() if s == section]
        parts = [f"{k}={flat[k]}{marks[origin[k]]}" for k in keys]
        console.print(f"  {section:<6} " + "  ".join(parts), markup=False)


def print_summary(console: Console, run: Run) -> None:
    m = run.metrics
    parts = [f"accuracy {m['accuracy']:.4f}"]
    if "top5_accuracy" in m:
        parts.append(f"top-5 {m['top5_accuracy']:.4f}")
    parts += [f"macro F1 {m['macro_f1']:.4f}", f"{m['num_samples']} images"]
    console.print("test: " + "  ".join(parts) + f"  (best epoch {m['best_epoch']}, trained {m['train_seconds']:.1f}s)",
                  markup=False)
    console.print(f"run folder: {run.path}", markup=False)
