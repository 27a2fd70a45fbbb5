"""Magnitude pruning of a trained run: global unstructured weights or whole conv channels, then fine-tuning.

Unstructured: torch.nn.utils.prune.global_unstructured with L1 magnitude over every conv and linear
weight together, so `amount` is the share of those weights set to zero. Structured: ln_structured
(L2 norm, dim 0) on every convolution, so `amount` of each layer's output channels become zero.
The masks are made permanent at once (prune.remove) and kept during fine-tuning by a callback that
zeroes the pruned weights after every step: the same updates of the kept weights as torch's masked
reparametrization, on a plain model that the one pipeline trains like any other (channels_last, DDP,
checkpoints). The result is a plain float model that `load_run` reads. Zeros keep their place in the
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

from ..errors import ConvlabError
from ..layout import WEIGHTS
from ..run import Run
from ..tasks import load_run
from ..training.callbacks import Callback
from .measure import cost_metrics, prunable_weights, weight_sparsity
from .variant import variant_folder, write_variant_files


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
    """Add pruning masks to `model` in place (weight = weight_orig * weight_mask until made permanent).

    The model is brought to the contiguous memory format first: global_unstructured flattens every weight
    with .view(-1), which a channels_last weight (a loaded run's) cannot give.
    """
    if not 0.0 <= amount < 1.0:
        raise ConvlabError(f"--amount must be in [0, 1), got {amount}")
    targets = prune_targets(model, structured)
    model.to(memory_format=torch.contiguous_format)
    if structured:
        for module, name in targets:
            prune.ln_structured(module, name, amount=amount, n=2, dim=0)  # dim 0: output channels
    else:
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> dict[str, torch.Tensor]:
    """Fold every mask into its weight and drop the reparametrization (plain state dict again).

    Returns the masks by weight name ("features.0.weight" -> 0/1 tensor), for KeepPruned.
    """
    masks = {}
    for name, module in prunable_weights(model):
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            masks[f"{name}.weight"] = module.weight_mask.detach().clone()
            prune.remove(module, "weight")
    return masks


class KeepPruned(Callback):
    """Zeroes the pruned weights after every optimizer step, so fine-tuning cannot bring them back."""

    needs_torch_engine = True

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks = masks
        self.params: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_begin(self, state):
        params = dict(state.plain_model.named_parameters())
        self.params = [(params[name], mask.to(params[name].device)) for name, mask in self.masks.items()]

    @torch.no_grad()
    def on_batch_end(self, state, logs):
        for param, mask in self.params:
            param.mul_(mask)


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
    if not 0.0 <= amount < 1.0:
        raise ConvlabError(f"--amount must be in [0, 1), got {amount}")
    run = source if isinstance(source, Run) else load_run(source, command="prune")
    conf = copy.deepcopy(run.config)
    if data_dir is not None:
        conf.data.data_dir = data_dir
    with variant_folder(out) as out:
        return _prune_into(out, run, conf, amount, structured, finetune_epochs, lr, console, quiet, latency_seconds)


def _prune_into(out: Path, run: Run, conf, amount: float, structured: bool, finetune_epochs: int, lr: float | None,
                console: Console, quiet: bool, latency_seconds: float) -> Run:
    test = Run(out, run.model, conf, run.classes, run.preprocess).test_data()

    def accuracy(model: nn.Module) -> float:
        return Run(out, model, conf, run.classes, run.preprocess).evaluate(arrays=test)["accuracy"]

    model = copy.deepcopy(run.model).cpu().eval()
    before = {"accuracy": accuracy(model), "sparsity": weight_sparsity(model)}
    apply_pruning(model, amount, structured)
    masks = make_permanent(model)
    after_pruning = {"accuracy": accuracy(model), "sparsity": weight_sparsity(model)}
    console.print(f"pruned {amount:.0%} of the {'conv channels' if structured else 'conv and linear weights'}: "
                  f"accuracy {before['accuracy']:.4f} -> {after_pruning['accuracy']:.4f}", markup=False)

    finetune = None
    if finetune_epochs:
        model, finetune = _finetune(model, masks, conf, run, out, finetune_epochs, lr, console, quiet)
    model.cpu().eval()

    pruned = Run(out, model, conf, run.classes, run.preprocess)
    metrics = pruned.evaluate(arrays=test)
    pruned.metrics = metrics
    pruned.save_model()
    metrics.update(cost_metrics(pruned, out / WEIGHTS, latency_seconds))
    metrics["zero_channels"] = zero_channels(model)
    source_cost = cost_metrics(run, run.path / WEIGHTS, latency_seconds) if run.path.is_dir() else {}
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


def _finetune(model: nn.Module, masks: dict[str, torch.Tensor], conf, run: Run, out: Path, epochs: int,
              lr: float | None, console: Console, quiet: bool) -> tuple[nn.Module, dict]:
    """A short run of the pipeline on the pruned model at a low constant rate; KeepPruned holds the zeros.

    It trains with the torch engine whatever engine the source used (the masks act on torch parameters), in
    the source run's input and normalization; its checkpoints are not kept in the variant folder.
    """
    from ..pipeline import Job, Start, run_pipeline  # lazy: start-up time (predict loads this part)

    optim = dataclasses.replace(conf.optim, lr=lr if lr is not None else conf.optim.lr / 10, schedule="none")
    train = dataclasses.replace(conf.train, epochs=epochs, out=str(out), quiet=quiet or conf.train.quiet,
                                engine="torch", tensorboard=False)
    tuned = dataclasses.replace(conf, optim=optim, train=train)
    start = Start(lambda channels, classes, size, dropout: model, channels=run.preprocess.channels,
                  size=tuple(run.preprocess.size), norm=run.preprocess.norm,
                  normalization_from=f"the source run {run.path}")
    origin = {key: "file" for key in tuned.flat()}
    job = Job(tuned, origin, start, "compress prune", callbacks=[KeepPruned(masks)], keep_checkpoints=False,
              console=console)
    result = run_pipeline(job)
    return result.model, {"epochs": epochs, "lr": optim.lr, "best_epoch": result.metrics["best_epoch"]}
