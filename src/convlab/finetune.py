"""Fine-tuning: a pretrained model, its head rebuilt for the new classes, trained by a freeze strategy.

The run folder is the same as `train`'s; config.yaml adds a finetune section (source, weights, strategy)
and preprocess.json records the input the weights expect (channels, size, normalization).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console

from . import config as cfg
from .data.batches import BatchLoader, Normalization
from .data.augment import build_augmentation
from .data.registry import load_dataset
from .data.subsets import select_subset
from .errors import ConvlabError
from .models.freeze import (HEAD, Freezer, ParamGroup, Stage, group_learning_rates, parameter_groups, parse_freeze,
                            plan_stages)
from .models.pretrained import Pretrained, load_backbone, parse_source, read_weights_file, timm_source, \
    torchvision_source
from .models.registry import count_parameters, create_model
from .run import CONFIG, Preprocess, Run, conform_arrays, load_run
from .session import (_version, carve_validation, make_run_dir, print_config, print_summary, recipe_for,
                      seed_everything, write_run)
from .training.callbacks import BestModel, EarlyStopping, History, PlainLogger, ProgressBar
from .training.checkpoint import CHECKPOINTS, Checkpointer
from .training.device import pick_device
from .training.freezing import FreezeSchedule
from .training.loop import fit
from .training.optim import build_optimizer, build_schedule
from .training.resume import resume_config

SECTIONS = cfg.TRAIN_SECTIONS + ("finetune",)


def finetune(source: str | Path | None = None, config: str | Path | None = None, *, console: Console | None = None,
             resume: str | Path | None = None, **overrides) -> Run:
    """Fine-tune `source` (a run folder, "torchvision:NAME" or "timm:NAME") on `data` and write a run folder.

    Keywords are the CLI's flags (data=, strategy=, weights=, epochs=, train_per_class=, ...). `resume` is a
    fine-tune run folder whose last checkpoint is continued, in the freeze state of its stage.
    """
    unknown = [k for k in overrides if k not in cfg.FLAT_KEYS]
    if unknown:
        cfg.coerce(unknown[0], overrides[unknown[0]], "convlab.finetune()")  # raises with a suggestion
    if source is not None:
        overrides["source"] = str(source)
    if resume is not None:
        conf = resume_config(resume, overrides, config)
        origin = {key: "flag" if overrides.get(key) is not None else "file" for key in cfg.FLAT_KEYS}
    else:
        conf, origin = cfg.resolve(overrides, config, recipe_for)
    if conf.finetune.source is None:
        raise ConvlabError("finetune needs --from SOURCE: a run folder, torchvision:NAME or timm:NAME")
    console = console or Console(highlight=False, soft_wrap=True)
    pretrained = load_source(conf.finetune.source, conf.finetune.weights)
    _take_from_source(conf, origin, pretrained)
    print_config(console, conf, origin, SECTIONS)

    seed_everything(conf.train.seed)
    device = pick_device(conf.train.device)
    # Loaded at the target size as eval and predict will load it; conform_arrays then only fixes channels.
    splits = load_dataset(conf.data.name, conf.data.data_dir, conf.data.image_size)
    splits = select_subset(splits, conf.data.classes, conf.data.train_per_class, conf.train.seed)
    data_channels = splits.shape[0]
    size = [conf.data.image_size] * 2 if conf.data.image_size else list(splits.shape[1:])
    splits.train = conform_arrays(splits.train, pretrained.channels, size, f"--from {pretrained.source}")
    splits.test = conform_arrays(splits.test, pretrained.channels, size, f"--from {pretrained.source}")
    train_set, val_set = carve_validation(splits, conf.data.val_fraction, conf.train.seed)
    if pretrained.mean is not None:
        norm = Normalization(list(pretrained.mean), list(pretrained.std))
    else:
        norm = Normalization.of(train_set.images)

    model = create_model(conf.model.name, pretrained.channels, splits.num_classes, tuple(size), conf.model.dropout)
    if pretrained.state is not None:
        load_backbone(model, pretrained.state, _weights_place(pretrained))
    groups = parameter_groups(model)
    frozen = parse_freeze(conf.finetune.freeze, groups)
    stages = plan_stages(conf.finetune.strategy, groups, conf.train.epochs, conf.finetune.head_epochs)
    rates = group_learning_rates(conf.finetune.strategy, groups, conf.optim.lr, conf.finetune.backbone_lr_mult)
    freezer = Freezer(model, groups, frozen, conf.finetune.train_bn)
    freezer.apply(stages[0].trainable)
    run_dir = make_run_dir(conf, resuming=resume is not None)
    if resume is None:  # saved now, so a fine-tune that dies can be resumed from its folder
        cfg.save_config(conf, run_dir / CONFIG, extra={"convlab": {"version": _version()}})
    console.print(f"data {splits.name}: {len(train_set)} train / {len(val_set) if val_set else 0} val / "
                  f"{len(splits.test)} test images of {pretrained.channels}x{size[0]}x{size[1]}"
                  f"{' (gray repeated)' if data_channels != pretrained.channels else ''}, {splits.num_classes} "
                  f"classes; normalization from {pretrained.normalization_from}; device {device}", markup=False)
    print_plan(console, model, groups, stages, rates, frozen, freezer, conf)

    model.to(device)
    generator = torch.Generator().manual_seed(conf.train.seed)
    augment = build_augmentation(conf.data.augment, min(size), splits.hflip)
    train_loader = BatchLoader(train_set, conf.train.batch_size, norm, device, shuffle=True, augment=augment,
                               generator=generator)
    val_loader = BatchLoader(val_set, 512, norm, device) if val_set else None
    optimizer = build_optimizer(model, conf.optim, optimizer_groups(model, groups, rates))
    schedule = build_schedule(optimizer, conf.optim, conf.train.epochs, len(train_loader))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=conf.optim.label_smoothing)

    history = History(run_dir / "metrics.csv")
    interactive = console.is_terminal and not conf.train.quiet
    announce = lambda line: console.print(line, markup=False)  # noqa: E731
    best = BestModel()
    callbacks = [FreezeSchedule(freezer, stages, conf.finetune.strategy, announce),
                 ProgressBar(console) if interactive else PlainLogger(console), history, best]
    stateful = {"history": history, "best": best}
    if conf.train.early_stop and val_loader is not None:
        stateful["early_stop"] = EarlyStopping(conf.train.early_stop)
        callbacks.append(stateful["early_stop"])
    callbacks.append(Checkpointer(run_dir / CHECKPOINTS, schedule, {"data_order": generator}, stateful,
                                  resume=resume is not None, resume_hint=f"convlab finetune --resume {run_dir}"))

    started = time.perf_counter()
    state = fit(model, train_loader, val_loader, optimizer, schedule, loss_fn, conf.train.epochs, callbacks)
    train_seconds = time.perf_counter() - started
    for param in model.parameters():  # the saved model is a plain model again
        param.requires_grad_(True)

    preprocess = Preprocess(size, pretrained.channels, norm.mean, norm.std, pretrained.normalization_from,
                            data_channels if data_channels != pretrained.channels else None)
    run = Run(run_dir, model, conf, splits.classes, preprocess, device=device)
    metrics = run.evaluate(arrays=splits.test, classes=splits.classes)
    metrics["train_seconds"] = round(train_seconds, 3)
    metrics["best_epoch"] = state.best_epoch or state.epoch
    metrics["epochs_run"] = state.epoch
    metrics["freeze"] = state.extra.get("freeze")
    run.metrics = metrics
    write_run(run, history.rows)
    print_summary(console, run)
    return run


# --- the source -----------------------------------------------------------------------------------------

def load_source(source: str, weights: str | None) -> Pretrained:
    """A run folder, torchvision:NAME or timm:NAME -> the model name, weights and expected input."""
    kind, name = parse_source(source)
    if kind == "torchvision":
        return torchvision_source(name, weights)
    if kind == "timm":
        return timm_source(name, weights)
    path = Path(name).expanduser()
    if not path.is_dir():
        raise ConvlabError(f"--from {source}: not a run folder, torchvision:NAME or timm:NAME")
    run = load_run(path)
    if weights:  # other weights for the run's architecture (a file; a run has no named weights)
        state, chosen = read_weights_file(weights), weights
    else:
        state, chosen = run.model.state_dict(), str(path / "model.safetensors")
    height, width = run.preprocess.size
    return Pretrained(str(path), run.config.model.name, chosen, state, channels=run.preprocess.channels,
                      image_size=height if height == width else None, mean=list(run.preprocess.mean),
                      std=list(run.preprocess.std))


def _take_from_source(conf: cfg.Config, origin: dict[str, str], pretrained: Pretrained) -> None:
    """The source decides the model and, unless --image-size says otherwise, the input size."""
    if origin["model"] in ("flag", "file") and conf.model.name != pretrained.model_name:
        raise ConvlabError(f"--model {conf.model.name} does not match --from {pretrained.source} (a "
                           f"{pretrained.model_name}); leave --model out, the source decides the model")
    conf.model.name, origin["model"] = pretrained.model_name, "source"
    if conf.data.image_size is None and pretrained.image_size:
        conf.data.image_size, origin["image_size"] = pretrained.image_size, "source"
    if conf.finetune.weights is None:
        conf.finetune.weights, origin["weights"] = pretrained.weights, "source"


def _weights_place(pretrained: Pretrained) -> str:
    if Path(str(pretrained.weights)).suffix in (".safetensors", ".pt", ".pth"):
        return f"weights file {pretrained.weights}"
    return f"the weights of {pretrained.source} ({pretrained.weights})"


# --- optimizer groups and the plan ---------------------------------------------------------------------

def optimizer_groups(model: torch.nn.Module, groups: list[ParamGroup], rates: dict[str, float]) -> list[dict]:
    """One optimizer group per parameter group at its own rate, the head first (its rate is the one logged).

    Every parameter is in the optimizer from the start; frozen ones have no gradient, so it skips them.
    """
    params = dict(model.named_parameters())
    ordered = [g for g in groups if g.name == HEAD] + [g for g in groups if g.name != HEAD]
    return [{"params": [params[name] for name in g.params], "lr": rates[g.name], "name": g.name} for g in ordered]


def print_plan(console: Console, model: torch.nn.Module, groups: list[ParamGroup], stages: list[Stage],
               rates: dict[str, float], frozen: set[str], freezer: Freezer, conf: cfg.Config) -> None:
    """Before training: parameters (total, trainable now), each group's state and learning rate, the stages."""
    sizes = dict((name, p.numel()) for name, p in model.named_parameters())
    total, trainable = count_parameters(model), count_parameters(model, trainable_only=True)
    console.print(f"fine-tune {conf.model.name} from {conf.finetune.source}: strategy {conf.finetune.strategy}, "
                  f"head rebuilt for the new classes; {total:,} parameters, {trainable:,} trainable in stage 1",
                  markup=False)
    for i, stage in enumerate(stages, start=1):
        last = stages[i].first_epoch - 1 if i < len(stages) else conf.train.epochs
        span = f"epoch {stage.first_epoch}" + (f"-{last}" if last > stage.first_epoch else "")
        console.print(f"  stage {i}/{len(stages)} ({span}): trains {', '.join(stage.trainable)}", markup=False)
    width = max(len(g.name) for g in groups)
    for group in groups:
        count = sum(sizes[p] for p in group.params)
        held = sum(1 for p in group.params if p in frozen)
        starts = next((s.first_epoch for s in stages if group.name in s.trainable), None)
        if held == len(group.params) or starts is None:
            when = "frozen" + (" (--freeze)" if held else "")
        else:
            when = "trains" if starts == 1 else f"frozen until epoch {starts}"
            when += f" ({held} tensors held by --freeze)" if held else ""
        modules = ", ".join(group.modules[:3]) + (", ..." if len(group.modules) > 3 else "")
        rate = f"{rates[group.name]:.2e}" if when.startswith(("trains", "frozen until")) else "-"
        console.print(f"  {group.name:<{width}}  {count:>11,} params  lr {rate:<8}  {when:<24} {modules}",
                      markup=False)
    if freezer.frozen_bn():
        note = "update their statistics (--train-bn)" if conf.finetune.train_bn else "run in eval mode"
        console.print(f"  frozen BatchNorm layers {note}: {len(freezer.frozen_bn())} now", markup=False)
