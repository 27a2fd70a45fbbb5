"""`--engine scratch`: the training loop on the NumPy engine, with the torch loop's callbacks and outputs.

Batches come from the same BatchLoader (same shuffling and augmentation) and the learning-rate schedule
from the same torch scheduler, driven on a stand-in optimizer whose rate (and momentum or beta1) is
copied into the scratch optimizer before every step. The torch model is kept as the twin's mirror: its
weights are refreshed after every epoch, so BestModel, the run folder and `load_run` work unchanged.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .. import scratch
from ..config import Config, OptimConfig, flag
from ..errors import ConvlabError
from ..models.registry import find_model
from ..models.to_scratch import load_torch_state, to_scratch, torch_state
from .callbacks import Callback, CallbackList
from .loop import LoopState
from .optim import OPTIMIZERS, build_schedule


# The training recipes of the torch loop that the NumPy engine does not have: refused when set.
TORCH_LOOP_ONLY = ("erasing", "mixup", "cutmix", "sampler", "class_weights", "warmup_epochs", "grad_accum",
                   "clip_grad", "ema")
SCRATCH_AUGMENT = ("none", "light", "standard")


def check_options(conf: Config, resuming: bool = False) -> None:
    """Fail early, naming the option, for what the scratch engine cannot do."""
    if resuming:
        raise ConvlabError("--resume: this run was trained with --engine scratch, whose checkpoints do not hold the "
                           "scratch optimizer's state; train it again (or use --engine torch to resume runs)")
    if conf.train.device not in ("auto", "cpu"):
        raise ConvlabError(f"--device {conf.train.device}: the scratch engine runs on the CPU only; "
                           f"use --device cpu (or auto), or --engine torch")
    if conf.train.amp in ("bf16", "fp16") or conf.train.compile:
        option = f"--amp {conf.train.amp}" if conf.train.amp in ("bf16", "fp16") else "--compile"
        raise ConvlabError(f"{option}: the scratch engine computes in float32 with NumPy; leave {option} out, "
                           f"or use --engine torch")
    if conf.data.augment not in SCRATCH_AUGMENT:
        raise ConvlabError(f"--augment {conf.data.augment}: the scratch engine augments with none, light or "
                           f"standard; use --engine torch")
    defaults, values = Config().flat(), conf.flat()
    for key in TORCH_LOOP_ONLY:
        if values[key] != defaults[key]:
            raise ConvlabError(f"{flag(key)} {values[key]}: the scratch engine trains without it; leave it out, or "
                               f"use --engine torch")
    if find_model(conf.model.name).family != "preset":
        raise ConvlabError(f"--model {conf.model.name}: the scratch engine trains the presets only (tiny-cnn, "
                           f"mnist-cnn, lenet, small-cnn, resnet8, resnet20); use --engine torch for torchvision models")


def scratch_retrain_hint(command: str, config_file: Path) -> str:
    """What Ctrl-C says: the checkpoints lack the scratch optimizer's state, so the run starts again."""
    return (f"the scratch engine cannot resume a run, so train it again with: convlab {command} --config "
            f"{config_file} --out NEW_DIR")


SCRATCH_OPTIMIZERS: dict[str, Callable[[list, OptimConfig], scratch.optim.Optimizer]] = {
    "sgd": lambda params, c: scratch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                                               nesterov=c.momentum > 0),
    "adam": lambda params, c: scratch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda params, c: scratch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
}


def scratch_optimizer(params, config: OptimConfig) -> scratch.optim.Optimizer:
    """The scratch optimizer for a config, with the same settings the torch engine uses."""
    build = SCRATCH_OPTIMIZERS.get(config.optimizer)
    if build is None:
        raise ConvlabError(f"--optimizer {config.optimizer}: the scratch engine has no such optimizer; choose "
                           f"from {', '.join(SCRATCH_OPTIMIZERS)}")
    return build(params, config)


def _follow(optimizer: scratch.optim.Optimizer, group: dict) -> None:
    """Copy what a torch schedule changes (lr; momentum or beta1 for onecycle) into the scratch optimizer."""
    optimizer.lr = group["lr"]
    if isinstance(optimizer, scratch.optim.SGD):
        optimizer.momentum = group["momentum"]
    else:
        optimizer.betas = tuple(group["betas"])


def skip_input_gradient(model: scratch.nn.Module) -> scratch.nn.Module:
    """The images need no gradient: the first convolution (the presets' first layer) skips its dx."""
    first_conv = next((m for m in model.modules() if isinstance(m, scratch.nn.Conv2d)), None)
    if first_conv is not None:
        first_conv.needs_input_grad = False
    return model


def train_step(model: scratch.nn.Module, loss_fn, optimizer, images: np.ndarray, labels: np.ndarray,
               l1: float = 0.0, l2: float = 0.0) -> tuple[float, np.ndarray]:
    """One step: forward, loss, backward, optional L1/L2 penalty gradients, update. Returns (loss, logits)."""
    logits = model(images)
    loss = float(loss_fn(logits, labels))
    optimizer.zero_grad()
    model.backward(loss_fn.backward())
    if l1 or l2:
        loss += scratch.optim.add_penalty_grads(model.parameters(), l1, l2)
    optimizer.step()
    return loss, logits


def evaluate(model: scratch.nn.Module, loader, loss_fn) -> dict[str, float]:
    """Mean loss and accuracy of the scratch model over a BatchLoader, in eval mode."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        labels = labels.numpy()
        logits = model(images.numpy())
        loss_sum += float(loss_fn(logits, labels)) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}


def fit_scratch(model: torch.nn.Module, train_loader, val_loader, config: OptimConfig, epochs: int,
                callbacks: list[Callback], dtype=np.float32, l1: float = 0.0,
                l2: float = 0.0) -> tuple[LoopState, scratch.nn.Module]:
    """Train the scratch twin of `model` (same initial weights); `model` ends with the trained weights.

    Returns the loop state and the trained scratch model.
    """
    twin = skip_input_gradient(to_scratch(model, dtype))
    optimizer = scratch_optimizer(list(twin.parameters()), config)
    stand_in = OPTIMIZERS[config.optimizer]([torch.zeros(1, requires_grad=True)], config)
    schedule = build_schedule(stand_in, config, epochs, len(train_loader))
    loss_fn = scratch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    state = LoopState(model, stand_in, epochs, len(train_loader))
    hooks = CallbackList(callbacks)
    hooks.on_train_begin(state)
    for epoch in range(1, epochs + 1):
        state.epoch = epoch
        hooks.on_epoch_begin(state)
        started = time.perf_counter()
        twin.train()
        # Running sums as 0-d tensors, the type the torch loop gives its callbacks (the NaN guard reads them).
        loss_sum, correct, seen = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.long), 0
        for batch, (images, labels) in enumerate(train_loader, start=1):
            labels = labels.numpy()
            _follow(optimizer, stand_in.param_groups[0])
            loss, logits = train_step(twin, loss_fn, optimizer, images.numpy().astype(dtype, copy=False), labels,
                                      l1, l2)
            stand_in.step()  # no gradient, so nothing moves; keeps the scheduler's step order as in torch
            schedule.after_batch()
            loss_sum += loss * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            hooks.on_batch_end(state, {"batch": batch, "seen": seen, "loss_sum": loss_sum, "correct": correct})
        logs = {"train_loss": float(loss_sum) / max(seen, 1), "train_accuracy": float(correct) / max(seen, 1),
                "lr": stand_in.param_groups[0]["lr"]}
        schedule.after_epoch()
        logs["seconds"] = time.perf_counter() - started
        logs["images_per_second"] = train_loader.num_samples / max(logs["seconds"], 1e-9)
        if val_loader is not None:
            val = evaluate(twin, val_loader, loss_fn)
            logs["val_loss"], logs["val_accuracy"] = val["loss"], val["accuracy"]
        model.load_state_dict(torch_state(twin))  # the torch mirror, for BestModel and the run folder
        hooks.on_epoch_end(state, logs)
        if state.stop:
            break
    hooks.on_train_end(state)
    load_torch_state(twin, model.state_dict())  # BestModel may have restored an earlier epoch
    twin.eval()
    return state, twin
