"""The one training pipeline. Every command that trains (train, finetune, distill, prune's fine-tune, tune's
trials) runs `run_pipeline`, which reads top to bottom:

config -> the run's data -> the model -> placement (device, channels_last, compile, DDP) -> loaders ->
parameter groups, optimizer, schedule -> callbacks -> fit (torch or scratch engine) -> test metrics -> run folder.

What differs between commands is data, not code (as nanoGPT's `init_from`): a `Start` says where the model
comes from (built fresh, pretrained with its head rebuilt, or given, as prune's masked model) and what input it
takes; a fine-tune adds a freeze plan (its `Start.freeze`, planned from conf.finetune), distillation a loss and
a callback, prune a mask-keeping callback, a tune trial a pruning callback. The learning-rate finder
(`find_lr`) builds the same run up to its optimizer (`prepare`) and ramps the rate instead of fitting.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from torch import nn

from . import config as cfg
from . import scratch
from .data.batches import Normalization
from .data.registry import parse_data_name
from .data.run_data import RunData
from .detection.checks import CLIPPED
from .errors import ConvlabError
from .evaluate.lr_plot import show_finding
from .evaluate.plots import PlotProcess, start_plot_process
from .files import write_json
from .layout import (CHECKPOINTS, CONFIG, DATA_ISSUES, HISTORY, LAST, RUN_MARKERS,
                     TENSORBOARD, version_block)
from .models.freeze import head_name
from .models.registry import find_model
from .run import Run
from .tasks import task_of
from .training import distributed, performance
from .training.callbacks import BestModel, EarlyStopping, History, PlainLogger, ProgressBar, find_callback
from .training.checkpoint import Checkpointer, check_free_space, checkpoint_bytes, checkpoint_position
from .training.determinism import deterministic_mode
from .training.feature_cache import FeatureStage, HeadSwitch, feature_stage
from .training.device import pick_device
from .training.ema import WeightEMA
from .training.freezing import FreezePlan, print_plan
from .training.loop import LoopState, fit
from .training.lr_find import DIVERGED, Finding, Ramp, run_ramp
from .training.numerics import NonFiniteLossGuard
from .training.optim import OptimizerSteps, build_optimizer, build_schedule, check_warmup
from .training.resume import elastic_restart as elastic_restart_of, resume_config, start_afresh
from .training.scratch_engine import check_options as check_scratch_options, fit_scratch, scratch_retrain_hint

MAX_ISSUE_LINES = 20  # warnings printed one per file; the rest are in data_issues.json

# A builder gets (in_channels, num_classes, (height, width), dropout) and returns the model.
Builder = Callable[[int, int, tuple[int, int], float], nn.Module]


@dataclass
class Start:
    """Where the model's weights come from, and the input they take."""

    build: Builder
    channels: int | None = None  # the input channels the weights take (None: the data's own)
    size: tuple[int, int] | None = None  # (height, width) they take (None: the data's own)
    norm: Normalization | None = None  # the normalization they take (None: measured on the training rows)
    normalization_from: str = "training data"
    freeze: bool = False  # train by conf.finetune's strategy and --freeze (a fine-tune)
    notes: list[str] = field(default_factory=list)  # printed as note lines

    @classmethod
    def fresh(cls, conf: cfg.Config) -> "Start":
        """A new model of conf.model.name with random weights (a classifier or a detector: the task's)."""
        return cls(task_of(conf).fresh_builder(conf))


@dataclass
class Job:
    """One training run: its config and what this command adds to the common pipeline."""

    conf: cfg.Config
    origin: dict[str, str]  # per flat key: default, recipe, file, flag or source (marks in the printed config)
    start: Start
    command: str = "train"  # the command named in messages, and in the Ctrl-C hint `convlab COMMAND --resume RUN`
    resuming: bool = False
    resumable: bool = True  # False: the command has no --resume (distill), so the Ctrl-C hint does not offer it
    loss_for: Callable | None = None  # (model, RunData, norm) -> loss_fn, instead of the cross-entropy
    callbacks: list = field(default_factory=list)  # run before the built-in ones
    sections: tuple[str, ...] = cfg.TRAIN_SECTIONS  # the config sections printed
    keep_checkpoints: bool = True  # False: the checkpoints folder is removed once the run is written
    console: Console | None = None


def run_pipeline(job: Job) -> Run:
    """Train as `job` says and write its run folder; returns the Run (rank 0's under torchrun)."""
    conf = job.conf
    conf.data.task = task_of(conf).name  # inferred from the data unless --task gave it; saved in config.yaml
    ranks, device = distributed.setup(pick_device(conf.train.device), conf.train.dist_timeout)
    console = job.console or Console(highlight=False, soft_wrap=True)
    silent = None
    if not ranks.is_main:  # under torchrun only rank 0 prints and writes the run folder
        silent = open(os.devnull, "w")
        console = Console(file=silent)
    plotter = None
    try:
        print_config(console, conf, job.origin, job.sections)
        refuse_options(conf)
        check_engine(job, ranks)
        if job.loss_for is not None and conf.optim.class_weights != "none":  # its loss replaces the weighted one
            raise ConvlabError(f"--class-weights {conf.optim.class_weights}: convlab {job.command} trains with its "
                               f"own loss; leave out --class-weights")
        check_warmup(conf.optim, conf.train.epochs)  # before the data loads: the schedule would refuse it
        if conf.train.tensorboard:
            from .evaluate.tensorboard import summary_writer_class  # lazy: start-up time (tensorboard is large)

            summary_writer_class()  # fail now, not after the data is loaded, when tensorboard is missing
        if not conf.train.deterministic or conf.train.threads:  # --deterministic keeps its fixed thread count
            performance.set_threads(conf.train.threads, device)
        plotter = start_plot_process() if ranks.is_main else None
        with deterministic_mode(conf.train.deterministic):
            return _run(job, console, ranks, device, plotter)
    finally:
        if plotter is not None:
            plotter.close()
        if silent is not None:
            silent.close()


def _run(job: Job, console: Console, ranks: distributed.Distributed, device: torch.device,
         plotter: PlotProcess | None) -> Run:
    conf, start, task = job.conf, job.start, task_of(job.conf)
    seed_everything(conf.train.seed)
    if conf.train.engine == "scratch":
        device = torch.device("cpu")

    # 1. the run's data (the task's): load, subset, the model's input, validation rows, normalization
    data = task.load_data(conf, start)
    norm = start.norm or data.normalization()
    channels, height, width = data.shape

    # 2. the model, and the run folder it will be written to
    model = start.build(channels, len(data.classes), (height, width), conf.model.dropout)
    path = run_dir_path(conf) if ranks.is_main else None
    restart = distributed.broadcast(elastic_restart(job, path) if ranks.is_main else None, ranks)
    restarted = restart == "resume"
    job.resuming = job.resuming or restarted  # the same folder and flags as the attempt that failed
    if restart == "afresh" and ranks.is_main:
        console.print(f"{restart_words()}: the attempt before died before its first checkpoint; starting {path} "
                      f"afresh", markup=False)
        start_afresh(path)
    run_dir, created = make_run_dir(conf, job.resuming, path) if ranks.is_main else \
        (Path(tempfile.mkdtemp(prefix="convlab-rank")), True)  # other ranks: a private folder, removed at the end
    try:
        return _train_in(job, console, ranks, device, plotter, data, norm, model, run_dir, restarted)
    except BaseException:
        if created and ranks.is_main and not _resumable(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # a failed command leaves no half-made folder behind
        raise
    finally:
        if not ranks.is_main:
            shutil.rmtree(run_dir, ignore_errors=True)


def _train_in(job: Job, console: Console, ranks: distributed.Distributed, device: torch.device,
              plotter: PlotProcess | None, data: RunData, norm: Normalization, model: nn.Module,
              run_dir: Path, restarted: bool = False) -> Run:
    conf, start, task = job.conf, job.start, task_of(job.conf)
    report_data_issues(console, data, run_dir)
    for note in [*data.notes, *start.notes]:
        console.print(f"note: {note}", markup=False)
    check_free_space(run_dir, checkpoint_bytes(model, averaged=conf.optim.ema > 0))
    if not job.resuming:  # saved now, so a run that dies can be resumed from its folder
        cfg.save_config(conf, run_dir / CONFIG, extra=version_block())
    console.print(task.data_line(data, conf, model, start, device), markup=False)
    prepared = prepare(job, console, ranks, device, data, norm, model)
    return _fit_and_write(job, console, ranks, device, plotter, data, norm, model, run_dir, restarted, prepared)


@dataclass
class Prepared:
    """What the loop trains with, built as every run builds it (steps 3-5): the pipeline fits it, lr-find ramps
    the rate over it."""

    plan: FreezePlan | None  # a fine-tune's stages, the first applied
    trained: nn.Module  # what runs the batches: the model in its wrappers, or a head on cached features
    channels_last: bool
    precision: performance.Precision
    generator: torch.Generator  # the training order's, saved in checkpoints
    train_loader: object
    val_loader: object
    features: object  # a fine-tune's FeatureStage (cached backbone features), or None
    optimizer: torch.optim.Optimizer
    schedule: object
    loss_fn: object


def prepare(job: Job, console: Console, ranks: distributed.Distributed, device: torch.device, data: RunData,
            norm: Normalization, model: nn.Module) -> Prepared:
    """Steps 3-5 on the built model: placement, the freeze plan's first stage, loaders, optimizer, schedule, loss."""
    conf, start, task = job.conf, job.start, task_of(job.conf)
    plan = FreezePlan.of(model, conf) if start.freeze else None  # a fine-tune: what trains when, at which rate

    # 3. placement: device, memory format, DDP, compile, precision; then the first stage of a freeze plan
    channels_last = performance.use_channels_last(conf.train.channels_last, model, device)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    # DDP registers the parameters that need gradients when it wraps: all of them, before any is frozen.
    wrapped = distributed.wrap_model(model, ranks, device, find_unused=plan is not None)
    trained = performance.maybe_compile(wrapped, conf.train.compile)
    if plan is not None:
        plan.apply_first_stage()
        print_plan(console, plan, conf)
    precision = performance.Precision.for_run(conf.train.amp, device)

    # 4. loaders
    generator = torch.Generator().manual_seed(conf.train.seed)
    train_loader, val_loader = task.loaders(data, conf, norm, device, channels_last, ranks, generator)
    if ranks.enabled:
        console.print(f"distributed: {ranks.world_size} processes, {train_loader.num_samples} training images "
                      f"each per epoch ({'nccl' if device.type == 'cuda' else 'gloo'})")

    # a fine-tune's head-only stages train on the frozen backbone's features, computed once
    features = None if plan is None or not task.feature_cache else feature_stage(console, conf, plan, model, trained, data, norm,
                                                       train_loader, val_loader, device, channels_last,
                                                       ranks.enabled)
    if features is not None:
        trained, train_loader, val_loader = features.model_switch, features.train_loader, features.val_loader

    # 5. parameter groups, optimizer, schedule, loss
    optimizer = build_optimizer(model, conf.optim, plan.optimizer_groups() if plan is not None else None)
    schedule = build_schedule(optimizer, conf.optim, conf.train.epochs, len(train_loader))
    loss_fn = task.loss(conf, data, device)
    if job.loss_for is not None:
        loss_fn = job.loss_for(model, data, norm)
    return Prepared(plan, trained, channels_last, precision, generator, train_loader, val_loader, features, optimizer,
                    schedule, loss_fn)


def _fit_and_write(job: Job, console: Console, ranks: distributed.Distributed, device: torch.device,
                   plotter: PlotProcess | None, data: RunData, norm: Normalization, model: nn.Module, run_dir: Path,
                   restarted: bool, prepared: Prepared) -> Run:
    """Steps 6-8: callbacks, fit, test metrics and the run folder."""
    conf, start, task = job.conf, job.start, task_of(job.conf)
    plan, trained, channels_last, precision = prepared.plan, prepared.trained, prepared.channels_last, \
        prepared.precision
    generator, train_loader, val_loader, features = prepared.generator, prepared.train_loader, \
        prepared.val_loader, prepared.features
    optimizer, schedule, loss_fn = prepared.optimizer, prepared.schedule, prepared.loss_fn

    # 6. callbacks: the command's first, then the freeze schedule, guard, logging, history, best model, checkpoints
    callbacks, history = make_callbacks(job, console, run_dir, ranks, device, plan, val_loader, data.classes,
                                        schedule, generator, model, features)

    if features is not None:
        callbacks.insert(0, features)  # before the epoch begins: features or full passes
        next(cb for cb in callbacks if isinstance(cb, Checkpointer)).defer = features.defers_save
    if job.resuming and ranks.is_main:
        print_resume(console, run_dir, ranks, restarted)

    # 7. fit, with the torch loop or the NumPy engine
    started = time.perf_counter()
    if conf.train.engine == "scratch":  # the NumPy engine trains a twin of `model` and copies its weights back
        state, _ = fit_scratch(model, train_loader, val_loader, conf.optim, conf.train.epochs, callbacks)
    else:
        state = fit(trained, train_loader, val_loader, optimizer, schedule, loss_fn, conf.train.epochs, callbacks,
                    precision=precision, step=task.step, validate=task.validate,
                    optimizer_steps=OptimizerSteps.of(conf.optim))
    train_seconds = time.perf_counter() - started
    distributed.teardown(ranks)
    cost = find_callback(callbacks, Checkpointer).cost_line()
    if cost:
        console.print(cost, markup=False)
    run = task.make_run(run_dir, model, conf, data, norm, channels_last, device, start)
    if not ranks.is_main:
        return run
    stopper = find_callback(callbacks, EarlyStopping)
    if state.stopped_early and stopper is not None:
        console.print(f"stopped early after epoch {state.epoch}: no better {stopper.monitor} in "
                      f"{stopper.patience} epochs", markup=False)

    # 8. what turns outputs into answers (fitted on the validation rows), test metrics and the run folder
    for line in task.fit_outputs(run, data, conf):
        console.print(line, markup=False)
    tested = time.perf_counter()
    metrics = task.test_metrics(run, data)
    metrics.update(train_seconds=round(train_seconds, 3), test_seconds=round(time.perf_counter() - tested, 3),
                   best_epoch=state.best_epoch or state.epoch, epochs_run=state.epoch)
    if plan is not None:
        metrics["freeze"] = state.extra.get("freeze")
    run.metrics = metrics
    write_run(run, history.rows, plotter, task)
    if not job.keep_checkpoints:
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    print_summary(console, run, task)
    return run


# --- the steps ---------------------------------------------------------------------------------------------

def recipe_for(data_name: str, task: str | None = None) -> dict:
    """The dataset's recipe, and its task: the data says whether a run classifies, detects or segments (files
    that serve several tasks, as COCO's, have a recipe for each; `task` picks one, None the data's own)."""
    entry, arg = parse_data_name(data_name)
    if task is not None and task not in entry.tasks:
        return {}  # task_of refuses the pair by name once the config is resolved
    entry = entry.for_task(task or entry.task_for(arg))
    return {"task": entry.task, **entry.recipe}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    scratch.nn.manual_seed(seed)  # dropout in the scratch engine


def refuse_options(conf: cfg.Config) -> None:
    """What the run's task cannot do yet is refused by name before any data is loaded."""
    task = task_of(conf)
    for option, given in (("--engine scratch", conf.train.engine == "scratch"),
                          ("--tensorboard", conf.train.tensorboard), ("--loader streaming", conf.data.loader ==
                                                                      "streaming"),
                          (f"--loss {conf.optim.loss}", conf.optim.loss != "ce"),
                          ("--class-weights auto", conf.optim.class_weights == "auto"),
                          ("--calibrate temperature", conf.train.calibrate == "temperature"),
                          ("--classes", bool(conf.data.classes)), ("--train-per-class", conf.data.train_per_class > 0),
                          ("--sampler balanced", conf.data.sampler == "balanced"),
                          (f"--augment {conf.data.augment}", conf.data.augment != "none"),
                          ("--erasing", conf.data.erasing > 0), ("--mixup", conf.data.mixup > 0),
                          ("--cutmix", conf.data.cutmix > 0)):
        if given:
            task.refuse(option)
    if conf.train.calibrate != "none" and conf.data.val_fraction <= 0:
        raise ConvlabError(f"--calibrate {conf.train.calibrate} fits on the validation rows and --val-fraction 0 "
                           f"holds none out; give --val-fraction above 0 (e.g. 0.1) or leave out --calibrate")


def check_engine(job: Job, ranks: distributed.Distributed) -> None:
    """What the scratch engine cannot do is refused by name before any data is loaded."""
    conf = job.conf
    if conf.train.engine != "scratch":
        return
    check_scratch_options(conf, job.resuming)
    if ranks.enabled:
        raise ConvlabError("--engine scratch runs in one process; leave out torchrun, or use --engine torch")
    if job.loss_for is not None or any(cb.needs_torch_engine for cb in job.callbacks):
        raise ConvlabError(f"--engine scratch: convlab {job.command} needs the torch engine (its loss or "
                           f"callbacks act on torch tensors); use --engine torch")
    if job.start.freeze and (conf.finetune.strategy != "full" or conf.finetune.freeze):
        raise ConvlabError(f"--engine scratch fine-tunes with --strategy full only (it has no frozen parameter "
                           f"groups or per-group learning rates; got --strategy {conf.finetune.strategy}"
                           f"{' and --freeze ' + conf.finetune.freeze if conf.finetune.freeze else ''}); pass "
                           f"--strategy full or use --engine torch")
    if find_model(conf.model.name).family != "preset":
        raise ConvlabError(f"--engine scratch trains the presets only, not {conf.model.name}; use --engine torch")


def make_callbacks(job: Job, console: Console, run_dir: Path, ranks: distributed.Distributed, device: torch.device,
                   plan: FreezePlan | None, val_loader, classes: list[str], schedule, generator: torch.Generator,
                   model: nn.Module | None = None, features: FeatureStage | None = None):
    """Everything around the loop, in order: the job's own, the freeze schedule, the weight average (--ema), the NaN
    guard, progress, history, best model, early stopping, TensorBoard and, last, the checkpointer (it saves what
    the others updated). Callers find one by its type (find_callback), not by its place in the list.
    `model` is the bare model (--ema averages it); `features`, a fine-tune's feature cache."""
    conf, task = job.conf, task_of(job.conf)
    history = History(run_dir / HISTORY, task.history_fields)
    best = BestModel(task.monitor, task.mode)
    callbacks = [*job.callbacks]
    if plan is not None:
        callbacks.append(plan.callback(lambda line: console.print(line, markup=False)))
    stateful = {"history": history, "best": best}
    if conf.optim.ema:  # after the job's callbacks (they may adjust the weights), before BestModel (it keeps these)
        stateful["ema"] = weight_average(conf, model, features, console, ranks)
        callbacks.append(stateful["ema"])
    interactive = console.is_terminal and not conf.train.quiet
    callbacks += [NonFiniteLossGuard(conf.optim.lr, run_dir / CHECKPOINTS),
                  ProgressBar(console) if interactive else PlainLogger(console), history, best]
    if ranks.enabled:
        callbacks.insert(0, distributed.AllReduceMetrics(device))
    if conf.train.early_stop and val_loader is not None:
        stateful["early_stop"] = EarlyStopping(conf.train.early_stop, task.monitor, task.mode)
        callbacks.append(stateful["early_stop"])
    elif conf.train.early_stop:
        console.print("note: --early-stop needs a validation split (--val-fraction > 0); it is off")
    if conf.train.tensorboard and ranks.is_main:
        from .evaluate.tensorboard import TensorBoardLogger  # lazy: start-up time (tensorboard is large)

        callbacks.append(TensorBoardLogger(run_dir / TENSORBOARD, val_loader, classes))
    if conf.train.engine == "scratch":
        hint = scratch_retrain_hint(job.command, run_dir / CONFIG)
    elif job.resumable:
        hint = f"convlab {job.command} --resume {run_dir}"
    else:
        hint = f"convlab {job.command} cannot resume; run it again with another --out"
    callbacks.append(Checkpointer(run_dir / CHECKPOINTS, schedule, {"data_order": generator}, stateful,
                                  resume=job.resuming, resume_hint=hint, ranks=ranks,
                                  resumable=job.resumable and conf.train.engine != "scratch",
                                  every=conf.train.checkpoint_every))  # last: saves what the others updated
    return callbacks, history


def weight_average(conf: cfg.Config, model: nn.Module, features: FeatureStage | None, console: Console,
                   ranks: distributed.Distributed) -> WeightEMA:
    """--ema: the average of `model`'s weights, validated each epoch and written as the run's model (a note says so).
    In a fine-tune's stages on cached features, its head is validated on those features, as the trained head is."""
    ema = WeightEMA(model, conf.optim.ema, ranks)
    if features is not None:
        ema.validated = HeadSwitch(ema.model, ema.model.get_submodule(head_name(ema.model)), features)
    console.print(f"note: --ema {conf.optim.ema:g}: validation, the best epoch, early stopping and the saved model "
                  f"use the moving average of the weights (updated every optimizer step), not the trained weights",
                  markup=False)
    return ema


def run_dir_path(conf: cfg.Config) -> Path:
    """--out, else runs/<data>-<model>-<timestamp>; under torchrun the job's id instead of the timestamp.

    A job restarted by torchelastic runs the same command again: its folder must come out the same, and
    a timestamp would not. The job id (torchrun --rdzv-id, or the uuid --standalone draws) stays the same
    across restarts.
    """
    if conf.train.out:
        return Path(conf.train.out).expanduser()
    data = re.sub(r"[^A-Za-z0-9_.-]+", "-", conf.data.name.replace(":", "-")).strip("-")
    model = conf.model.name.replace(":", "-")  # timm:NAME
    job_id = distributed.run_id()  # also under torchrun --nproc_per_node=1, which can restart too
    if job_id:
        return Path("runs") / f"{data}-{model}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', job_id)}"
    if distributed.max_restarts():
        raise ConvlabError("torchrun --max-restarts restarts the job in the same run folder, which a timestamp "
                           "cannot name; pass --out DIR (or torchrun --rdzv-id JOB)")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{data}-{model}-{stamp}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path("runs") / f"{data}-{model}-{stamp}-{suffix}"
    return path


def elastic_restart(job: Job, path: Path) -> str | None:
    """A restarted torchrun job in its own run folder: "resume" from its checkpoint or start "afresh" (resume.py)."""
    if job.resuming:
        return None
    found = elastic_restart_of(path, named_after_job=job.conf.train.out is None and distributed.run_id() is not None)
    return None if found == "resume" and not job.resumable else found


def restart_words() -> str:
    count = distributed.restart_count()
    return f"torchelastic restart {count}" if count else f"torchrun job {distributed.run_id()} again"


def make_run_dir(conf: cfg.Config, resuming: bool = False, path: Path | None = None) -> tuple[Path, bool]:
    """Create the run folder before training, so an unwritable place fails now, not after an hour.

    Returns the folder and whether this call created it (a failed run removes only a folder it made).
    """
    path = path or run_dir_path(conf)
    if not resuming and any((path / name).exists() for name in RUN_MARKERS):
        where = f"--out {path}" if conf.train.out else f"the run folder {path}"
        raise ConvlabError(f"{where} already holds a run; choose another folder or remove it first "
                           f"(to continue an interrupted run: convlab train --resume {path})")
    created = not path.exists()
    ensure_writable(path, "the run folder", "pass --out with a writable folder")
    return path, created


def ensure_writable(path: Path, what: str, hint: str) -> None:
    """Create `path` and write a probe file in it, so a read-only or missing place fails before any work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConvlabError(f"cannot write {what} {path} ({err.strerror}); {hint}") from None


def _resumable(run_dir: Path) -> bool:
    """Whether a failed run left a checkpoint past its start (Ctrl-C, a NaN after epoch 1): worth keeping."""
    last = run_dir / CHECKPOINTS / LAST
    if not last.is_file():
        return False
    try:
        position = checkpoint_position(last)
    except ConvlabError:
        return False
    return position["epoch"] > 0 or position["batch"] > 0


def print_resume(console: Console, run_dir: Path, ranks: distributed.Distributed, restarted: bool) -> None:
    """One line: where the run continues from (and that torchelastic restarted it); a note if the world size
    changed."""
    record = checkpoint_position(run_dir / CHECKPOINTS / LAST)
    where = f"epoch {record['epoch']}" + (f", batch {record['batch']}" if record["batch"] else "")
    why = f"{restart_words()}: " if restarted else ""
    console.print(f"{why}resuming {run_dir} after {where}", markup=False)
    if record["world_size"] != ranks.world_size:
        console.print(f"note: the checkpoint was written by {record['world_size']} processes, this job has "
                      f"{ranks.world_size}: training continues with the new shards (close to, not bit-identical "
                      f"with, an uninterrupted run)", markup=False)


def report_data_issues(console: Console, data: RunData, run_dir: Path) -> None:
    """Warn about each skipped image (and each dropped or clipped box) and write them to data_issues.json."""
    issues, boxes = data.issues, data.box_issues
    if not issues and not boxes:
        return
    lines = [f"skipped {issue['path']}: {issue['problem']}" for issue in issues]
    lines += [f"{box['file']}: image {box['image']}, box {box['index']}: {box['problem']}" for box in boxes]
    for line in lines[:MAX_ISSUE_LINES]:
        console.print(f"warning: {line}", markup=False)
    if len(lines) > MAX_ISSUE_LINES:
        console.print(f"warning: ... and {len(lines) - MAX_ISSUE_LINES} more", markup=False)
    counted = [f"{len(issues)} unreadable images skipped"] if issues else []
    dropped = sum(box["problem"] != CLIPPED for box in boxes)
    counted += [f"{dropped} boxes dropped, {len(boxes) - dropped} clipped"] if boxes else []
    console.print(f"warning: {'; '.join(counted)} (listed in {run_dir / DATA_ISSUES}; --strict makes unreadable "
                  "images an error)", markup=False)
    document = {"skipped": len(issues), "files": issues}
    if boxes:
        document.update(boxes_dropped=dropped, boxes_clipped=len(boxes) - dropped, boxes=boxes)
    write_json(run_dir / DATA_ISSUES, document)


def write_run(run, history: list[dict], plotter: PlotProcess | None = None, task=None) -> None:
    """Config, weights, metrics and the task's figures; the plots by `plotter`'s child process when there is one."""
    cfg.save_config(run.config, run.path / CONFIG, extra=version_block())
    run.save_model()
    run.save_metrics()
    (task or task_of(run.config)).write_figures(run, history, plotter)


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
        parts = [f"{k}={_shown(flat[k])}{marks[origin[k]]}" for k in keys]
        console.print(f"  {section:<6} " + "  ".join(parts), markup=False)


def _shown(value) -> str:
    """Floats to 12 digits (prune's lr / 10 prints 0.0003, not 0.00030000000000000003), else as they are."""
    return repr(float(f"{value:.12g}")) if isinstance(value, float) else str(value)


def print_summary(console: Console, run, task=None) -> None:
    m = run.metrics
    for warning in m.get("warnings", []):
        console.print(f"warning: {warning}", markup=False)
    line = (task or task_of(run.config)).summary(m)
    console.print(f"test: {line}  (best epoch {m['best_epoch']}, trained {m['train_seconds']:.1f}s)", markup=False)
    console.print(f"run folder: {run.path}", markup=False)


# --- the command ----------------------------------------------------------------------------------------------

def train(config: str | Path | None = None, *, console: Console | None = None, resume: str | Path | None = None,
          loss_for=None, callbacks: list | None = None, **overrides) -> Run:
    """Train a model and write its run folder. Keywords are the CLI's flags (data=, model=, epochs=, ...).

    `config` is an optional YAML file applied before the keywords; the dataset's recipe fills the rest.
    `resume` is a run folder whose last checkpoint is continued with the run's saved config.
    `loss_for(model, data, norm) -> loss_fn` replaces the cross-entropy loss and `callbacks` run
    before the built-in ones (distillation uses both).
    """
    return run_pipeline(train_job(config, console=console, resume=resume, loss_for=loss_for, callbacks=callbacks,
                                  **overrides))


def train_job(config: str | Path | None = None, *, console: Console | None = None, resume: str | Path | None = None,
              loss_for=None, callbacks: list | None = None, **overrides) -> Job:
    """The Job `train` runs, for commands that add to it before running it (distill names itself)."""
    conf, origin = resolve_job_config(overrides, config, resume, "convlab.train()")
    if conf.finetune.source is not None:
        raise ConvlabError(f"the config sets a fine-tuning source ({conf.finetune.source}); use convlab finetune "
                           f"(or convlab.finetune) for it")
    return Job(conf, origin, Start.fresh(conf), "train", resume is not None, loss_for=loss_for,
               callbacks=list(callbacks or []), console=console)


def resolve_job_config(overrides: dict, config, resume, who: str) -> tuple[cfg.Config, dict[str, str]]:
    """The run's config and where each value came from: a resumed run's own, or recipe < file < keywords."""
    unknown = [k for k in overrides if k not in cfg.FLAT_KEYS]
    if unknown:
        cfg.coerce(unknown[0], overrides[unknown[0]], who)  # raises with a suggestion
    if resume is not None:
        conf = resume_config(resume, overrides, config)
        return conf, {key: "flag" if overrides.get(key) is not None else "file" for key in cfg.FLAT_KEYS}
    return cfg.resolve(overrides, config, recipe_for)


# --- the learning-rate finder -------------------------------------------------------------------------------

def find_lr(job: Job, ramp: Ramp | None = None, show_config: bool = True) -> Finding:
    """Ramp the rate over the job's own data, model, loaders, optimizer, loss and task step (the same `prepare`
    as its training) and return what the loss did; no run folder, nothing written, the model thrown away.

    A fine-tune ramps its first stage, the one that trains first (two-stage and gradual: the head, on cached
    features where the run would use them; fastai's lr_find on a frozen learner does the same), every group
    at its ratio to the head's rate.
    """
    conf, ramp = job.conf, (ramp or Ramp()).check()
    conf.data.task = task_of(conf).name
    task, start = task_of(conf), job.start
    console = job.console or Console(highlight=False, soft_wrap=True)
    if distributed.launched_by_torchrun():
        raise ConvlabError("the learning-rate finder runs in one process; run it without torchrun")
    if conf.train.engine != "torch":
        raise ConvlabError(f"the learning-rate finder trains with the torch engine; leave out --engine "
                           f"{conf.train.engine}")
    if show_config:
        print_config(console, conf, job.origin, job.sections)
    refuse_options(conf)
    device = pick_device(conf.train.device)
    if not conf.train.deterministic or conf.train.threads:
        performance.set_threads(conf.train.threads, device)
    with deterministic_mode(conf.train.deterministic):
        seed_everything(conf.train.seed)
        data = task.load_data(conf, start)
        norm = start.norm or data.normalization()
        channels, height, width = data.shape
        model = start.build(channels, len(data.classes), (height, width), conf.model.dropout)
        for note in [*data.notes, *start.notes]:
            console.print(f"note: {note}", markup=False)
        console.print(task.data_line(data, conf, model, start, device), markup=False)
        prepared = prepare(job, console, distributed.Distributed(), device, data, norm, model)
        if prepared.features is not None:  # the first epoch's switch: the head trains on cached features
            prepared.features.on_epoch_begin(LoopState(prepared.trained, prepared.optimizer, 1,
                                                       len(prepared.train_loader), epoch=1))
        console.print(f"lr-find: the rate from {ramp.start:.0e} to {ramp.end:.0e} over at most {ramp.steps} steps "
                      f"(stops once the smoothed loss passes {DIVERGED:g}x its minimum); no weights are kept",
                      markup=False)
        if prepared.plan is not None:
            trains = ", ".join(prepared.plan.stages[0].trainable)
            console.print(f"lr-find: ramps stage 1 of the fine-tune (trains {trains}), each group at its ratio to "
                          f"the head's rate; the rate found is --lr, the head's", markup=False)
        return run_ramp(prepared.trained, prepared.train_loader, prepared.optimizer, prepared.loss_fn, task.step,
                        ramp, prepared.precision)


def use_found_lr(job: Job, ramp: Ramp | None = None) -> Finding:
    """`--lr find`: run the finder on the job, show its curve and suggestions, and set the job's lr to the
    valley suggestion (the rate the run then trains with, and config.yaml records)."""
    console = job.console = job.console or Console(highlight=False, soft_wrap=True)
    finding = find_lr(job, ramp, show_config=False)
    suggestions = finding.suggestions()
    show_finding(console, finding, suggestions)
    job.conf.optim.lr, job.origin["lr"] = suggestions["valley"], "flag"
    console.print(f"--lr find: {job.command} trains at lr {suggestions['valley']:.3g} (valley)", markup=False)
    return finding
