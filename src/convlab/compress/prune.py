"""Magnitude pruning of a trained run: global unstructured weights or whole conv channels, then fine-tuning.

Unstructured: torch.nn.utils.prune.global_unstructured with L1 magnitude over every conv and linear
weight together, so `amount` is the share of those weights set to zero. Structured: ln_structured
(L2 norm, dim 0) on every convolution, so `amount` of each layer's output channels become zero.
The masks stay in place during fine-tuning (pruned weights stay zero) and prune.remove makes them
permanent; the result is a plain float model that `load_run` reads. Zeros keep their place in the
tensors: the safetensors file keeps its size, its gzip size shrinks.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from torch.nn.utils import prune

from ..data.augment import build_augmentation
from ..data.batches import BatchLoader
from ..data.registry import load_dataset
from ..errors import ConvlabError
from ..run import Run, load_run
from ..session import carve_validation
from ..training.callbacks import BestModel, PlainLogger, ProgressBar
from ..training.device import pick_device
from ..training.loop import fit
from ..training.optim import build_optimizer, build_schedule
from .measure import cost_metrics, prunable_weights, weight_sparsity
from .variant import prepare_out, write_variant_files


def prune_targets(model: nn.Module, structured: bool) -> list[tuple[nn.Module, str]]:
    """(module, "weight") pairs to prune: conv and linear layers, or only convolutions for channels."""
    layers = prunable_weights(model)
    if structured:
        layers = [(name, module) for name, module in layers if not isinstance(module, nn.Linear)]
    if not layers:
        what = "convolution" if structured else "convolution or fully connected layer"
        raise ConvlabError(f"the model has no {what} to prune")
    return [(module, "weight") for _, module in layers]


def apply_pruning(model: nn.Module, amount: float, structured: bool = False) -> None:
    """Add pruning masks to `model` in place (weight = weight_orig * weight_mask until made permanent)."""
    if not 0.0 <= amount < 1.0:
        raise ConvlabError(f"--amount must be in [0, 1), got {amount}")
    targets = prune_targets(model, structured)
    if structured:
        for module, name in targets:
            prune.ln_structured(module, name, amount=amount, n=2, dim=0)  # dim 0: output channels
    else:
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> None:
    """Fold every mask into its weight and drop the reparametrization (plain state dict again)."""
    for _, module in prunable_weights(model):
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


def zero_channels(model: nn.Module) -> int:
    """Output channels of convolutions whose whole filter is zero."""
    count = 0
    for _, module in prunable_weights(model):
        if not isinstance(module, nn.Linear):
            count += int((module.weight.flatten(1).abs().sum(1) == 0).sum())
    return count


def prune_run(source: str | Path | Run, out: str | Path, amount: float = 0.5, structured: bool = False,
              finetune_epochs: int = 0, lr: float | None = None, data_dir: str | None = None,
              console: Console | None = None, quiet: bool = False, latency_seconds: float = 0.3) -> Run:
    """Prune a run, optionally fine-tune it, and write the pruned model as a variant folder at `out`."""
    console = console or Console(highlight=False, soft_wrap=True)
    if finetune_epochs < 0:
        raise ConvlabError(f"--finetune-epochs must be >= 0, got {finetune_epochs}")
    if lr is not None and lr <= 0:
        raise ConvlabError(f"--lr must be > 0, got {lr}")
    run = source if isinstance(source, Run) else load_run(source)
    if not 0.0 <= amount < 1.0:
        raise ConvlabError(f"--amount must be in [0, 1), got {amount}")
    out = prepare_out(out)
    conf = copy.deepcopy(run.config)
    if data_dir is not None:
        conf.data.data_dir = data_dir
    splits = load_dataset(conf.data.name, conf.data.data_dir, conf.data.image_size)

    def accuracy(model: nn.Module) -> float:
        probe = Run(out, model, conf, run.classes, run.preprocess)
        return probe.evaluate(arrays=splits.test, classes=splits.classes)["accuracy"]

    model = copy.deepcopy(run.model).cpu().eval()
    before = {"accuracy": accuracy(model), "sparsity": weight_sparsity(model)}
    apply_pruning(model, amount, structured)
    after_pruning = {"accuracy": accuracy(model), "sparsity": weight_sparsity(model)}
    console.print(f"pruned {amount:.0%} of the {'conv channels' if structured else 'conv and linear weights'}: "
                  f"accuracy {before['accuracy']:.4f} -> {after_pruning['accuracy']:.4f}", markup=False)

    finetune = None
    if finetune_epochs:
        finetune = _finetune(model, conf, splits, run, finetune_epochs, lr, console, quiet)
    make_permanent(model)
    model.eval()

    pruned = Run(out, model, conf, run.classes, run.preprocess)
    metrics = pruned.evaluate(arrays=splits.test, classes=splits.classes)
    pruned.metrics = metrics
    pruned.save_model()
    metrics.update(cost_metrics(pruned, out / "model.safetensors", latency_seconds))
    metrics["zero_channels"] = zero_channels(model)
    source_cost = cost_metrics(run, run.path / "model.safetensors", latency_seconds) if run.path.is_dir() else {}
    metrics["before"] = {**before, **{k: source_cost[k] for k in ("size_mb", "gzip_mb") if k in source_cost}}
    metrics["after_pruning"] = after_pruning
    if finetune:
        metrics["finetune"] = finetune
    provenance = {"variant": "pruned", "source": str(run.path), "amount": amount,
                  "method": "ln_structured L2 on conv output channels" if structured
                  else "global_unstructured L1 on conv and linear weights",
                  "finetune_epochs": finetune_epochs}
    if finetune:
        provenance["finetune_lr"] = finetune["lr"]
    write_variant_files(pruned, provenance)
    console.print(f"sparsity {before['sparsity']:.3f} -> {metrics['sparsity']:.3f}  accuracy "
                  f"{before['accuracy']:.4f} -> {metrics['accuracy']:.4f}  size {metrics['size_mb']:.3f} MB "
                  f"(gzip {metrics['before'].get('gzip_mb', float('nan')):.3f} -> {metrics['gzip_mb']:.3f} MB)",
                  markup=False)
    console.print(f"pruned model: {out}", markup=False)
    return pruned


def _finetune(model: nn.Module, conf, splits, run: Run, epochs: int, lr: float | None, console: Console,
              quiet: bool) -> dict:
    """Train the masked model for a few epochs at a low constant rate; masks keep pruned weights at zero."""
    device = pick_device(conf.train.device)
    torch.manual_seed(conf.train.seed)
    train_set, val_set = carve_validation(splits, conf.data.val_fraction, conf.train.seed)
    channels, height, width = splits.shape
    norm = run.preprocess.norm  # the source run's normalization: the model was trained with it
    generator = torch.Generator().manual_seed(conf.train.seed)
    augment = build_augmentation(conf.data.augment, min(height, width), splits.hflip)
    train_loader = BatchLoader(train_set, conf.train.batch_size, norm, device, shuffle=True, augment=augment,
                               generator=generator)
    val_loader = BatchLoader(val_set, 512, norm, device) if val_set else None
    optim = dataclasses.replace(conf.optim, lr=lr if lr is not None else conf.optim.lr / 10, schedule="none")
    model.to(device)
    optimizer = build_optimizer(model, optim)
    schedule = build_schedule(optimizer, optim, epochs, len(train_loader))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=conf.optim.label_smoothing)
    logger = ProgressBar(console) if console.is_terminal and not quiet else PlainLogger(console)
    best = BestModel()
    state = fit(model, train_loader, val_loader, optimizer, schedule, loss_fn, epochs, [logger, best])
    model.cpu()
    return {"epochs": epochs, "lr": optim.lr, "best_epoch": state.best_epoch or state.epoch}
