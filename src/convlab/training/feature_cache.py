"""Features of a frozen backbone computed once: while a fine-tune trains only its head, the head trains on them.

A frozen backbone in eval mode (BatchNorm statistics frozen, no active dropout) gives the same output for an
image every epoch, so recomputing it (as Keras' `trainable=False` and a plain PyTorch loop do) is nearly all
of a CPU linear probe's time. The features are what the head module receives (captured by a forward pre-hook,
so any architecture works), for every training and validation row, computed under inference_mode with a
progress bar. They live in `$CONVLAB_HOME/features/<key>/`, keyed by the backbone's weights, the data and the
preprocessing, so a second fine-tune with another head or lr reuses them; in memory when the disk lacks room;
not at all, with a message, when neither has room. With --augment, --feature-views K caches K augmented views
per training image, drawn with the run's seed (each epoch draws one view per image); without it the run trains
uncached. Stages that unfreeze the backbone go back to full forward passes.

The model the loop trains is `HeadSwitch`: the head on features in a cached stage, the whole model otherwise;
its state dict is the whole model's, so checkpoints, the best model and the run folder are ordinary.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from ..config import Config
from ..data.augment import build_augmentation
from ..data.batches import BatchLoader, Normalization
from ..data.download import cache_root
from ..data.run_data import RunData
from ..data.sampling import epoch_order
from ..data.streaming import StreamingLoader
from ..errors import ConvlabError
from ..files import atomic_write
from ..models.freeze import HEAD, head_name
from .callbacks import Callback
from .checkpoint import check_free_space
from .freezing import FreezePlan

FEATURES_DIR = "features"
FEATURES_FILE = "features.safetensors"
KEY_FILE = "key.json"
EXTRACT_BATCH = 64
DROPOUT_ATTRS = ("p", "drop_prob")  # nn.Dropout*, torchvision's StochasticDepth / timm's DropPath


def features_home() -> Path:
    return cache_root() / FEATURES_DIR


# --- when the cache applies ---------------------------------------------------------------------------

def head_only_stages(plan: FreezePlan) -> list[bool]:
    """Per stage of the plan: whether only head parameters train in it (the backbone is frozen whole)."""
    head = {p for g in plan.groups if g.name == HEAD for p in g.params}
    out = []
    for stage in plan.stages:
        live = {p for g in plan.groups if g.name in stage.trainable for p in g.params} - plan.frozen
        out.append(live <= head)
    return out


def why_uncached(conf: Config, plan: FreezePlan, model: nn.Module, distributed: bool) -> str | None:
    """The reason the frozen stages cannot train on cached features, or None when they can."""
    head = head_name(model)
    if conf.finetune.no_feature_cache:
        return "--no-feature-cache"
    if distributed:
        return "under torchrun each process computes its own shard; the cache is for one process"
    if conf.data.augment != "none" and not conf.finetune.feature_views:
        return (f"--augment {conf.data.augment} changes the images every epoch; --feature-views K caches K "
                f"augmented views per image")
    mixing = [flag for flag, value in (("--erasing", conf.data.erasing), ("--mixup", conf.data.mixup),
                                       ("--cutmix", conf.data.cutmix)) if value > 0]
    if mixing:
        return f"{' and '.join(mixing)} change the images at every step"
    for name, module in model.named_modules():
        if name == head or name.startswith(head + "."):
            continue
        if conf.finetune.train_bn and isinstance(module, nn.modules.batchnorm._BatchNorm):
            return "--train-bn updates the frozen BatchNorm statistics, so the backbone's output changes"
        kind = type(module).__name__
        drop = next((getattr(module, a) for a in DROPOUT_ATTRS if isinstance(getattr(module, a, None), float)), 0.0)
        if ("drop" in kind.lower() or "stochastic" in kind.lower()) and drop > 0:
            return f"{name} ({kind}, p={drop}) before the head is random in training"
    return None


# --- the key ------------------------------------------------------------------------------------------

def cache_key(model: nn.Module, data: RunData, norm: Normalization, conf: Config, channels_last: bool,
              device: torch.device) -> tuple[str, dict]:
    """A hash of the backbone's weights, the data rows and the preprocessing; and the readable part of it."""
    head = head_name(model)
    views = conf.finetune.feature_views if conf.data.augment != "none" else 0
    described = {"model": conf.model.name, "head_input": head, "shape": list(data.splits.shape),
                 "mean": list(norm.mean), "std": list(norm.std), "channels_last": channels_last,
                 "device": device.type, "torch": torch.__version__.split("+")[0],
                 "augment": conf.data.augment if views else "none", "views": views,
                 "seed": conf.train.seed if views else None, "data": conf.data.name,
                 "train_rows": len(data.train_rows), "val_rows": 0 if data.val_rows is None else len(data.val_rows)}
    digest = hashlib.blake2b(json.dumps(described, sort_keys=True).encode(), digest_size=16)
    for name, tensor in model.state_dict().items():  # the source weights, as loaded into the backbone
        if name == head or name.startswith(head + "."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    train = data.splits.train
    for array in (train.images, train.labels, data.train_rows,
                  np.zeros(0, np.int64) if data.val_rows is None else data.val_rows):
        for start in range(0, len(array), 4096):  # a memmap is read in pieces
            digest.update(np.ascontiguousarray(array[start:start + 4096]).tobytes())
    return digest.hexdigest(), described


# --- computing the features ---------------------------------------------------------------------------

def row_loader(data: RunData, rows: np.ndarray, norm: Normalization, device: torch.device, channels_last: bool,
               augment=None, generator: torch.Generator | None = None):
    """The rows in order, as the training loaders prepare them (in memory or streamed)."""
    train = data.splits.train
    if data.streamed:
        return StreamingLoader(train.images, train.labels, rows, EXTRACT_BATCH, norm, device, augment=augment,
                               generator=generator, channels_last=channels_last)
    return BatchLoader(train.subset(rows), EXTRACT_BATCH, norm, device, augment=augment, generator=generator,
                       channels_last=channels_last)


def extract(model: nn.Module, loaders: list, console: Console, label: str) -> list[torch.Tensor]:
    """What the head receives for every image of each loader, under inference_mode; one progress bar."""
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(head_name(model)).register_forward_pre_hook(
        lambda module, inputs: captured.append(inputs[0].detach().flatten(1).float().clone()))
    was_training = model.training
    model.eval()
    out = []
    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True, disable=not console.is_terminal)
    try:
        with progress, torch.inference_mode():
            task = progress.add_task("features", total=sum(len(loader) for loader in loaders))
            for loader in loaders:
                captured.clear()
                for images, _ in loader:
                    model(images)
                    progress.advance(task)
                out.append(torch.cat(captured))
    finally:
        hook.remove()
        model.train(was_training)
    return out


@dataclass
class Features:
    train: torch.Tensor  # (views, n_train, D): view v of training row i
    val: torch.Tensor | None  # (n_val, D), never augmented

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"train": self.train, **({"val": self.val} if self.val is not None else {})}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


def available_memory() -> int | None:
    """Bytes of memory the system can still give (MemAvailable); None where it cannot tell."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# --- training on them ---------------------------------------------------------------------------------

class _StandsInFor:
    """A loader the training loop takes for `self.full`: same device, sample count and number of batches."""

    full: object

    @property
    def device(self) -> torch.device:
        return self.full.device

    @property
    def num_samples(self) -> int:
        return self.full.num_samples

    def __len__(self) -> int:
        return len(self.full)


class FeatureBatches(_StandsInFor):
    """Batches of cached features in the training loader's order: same length, same draws from `generator`."""

    def __init__(self, full, features: torch.Tensor, labels: torch.Tensor, shuffle: bool,
                 generator: torch.Generator | None, streamed: bool):
        self.full, self.features, self.labels = full, features, labels
        self.shuffle, self.generator, self.streamed = shuffle, generator, streamed
        self.batch_size = full.batch_size

    def __iter__(self):
        n = len(self.labels)
        order = epoch_order(self.labels.cpu().numpy(), self.full.sampler if self.shuffle else None, self.generator)
        if self.streamed and self.shuffle:  # the streaming loader also draws one seed per batch
            torch.randint(0, 2 ** 62, (len(self),), generator=self.generator)
        views = self.features.shape[0] if self.features.dim() == 3 else 1
        view = torch.randint(views, (n,), generator=self.generator) if views > 1 else torch.zeros(n, dtype=torch.long)
        order, view = order.to(self.labels.device), view.to(self.labels.device)
        for start in range(0, n, self.batch_size):
            index = order[start:start + self.batch_size]
            rows = self.features[view[index], index] if self.features.dim() == 3 else self.features[index]
            yield rows, self.labels[index]


class SwitchLoader(_StandsInFor):
    """The feature batches in a cached stage, the ordinary loader otherwise."""

    def __init__(self, stage: "FeatureStage", full, which: str):
        self.stage, self.full, self.which = stage, full, which

    def _active(self):
        return self.stage.loader(self.which) if self.stage.cached else self.full


    def __iter__(self):
        return iter(self._active())


class HeadSwitch(nn.Module):
    """The head alone (on features) in a cached stage, the whole model otherwise; the state dict is the model's."""

    def __init__(self, full: nn.Module, head: nn.Module, stage: "FeatureStage"):
        super().__init__()
        self.full = full
        object.__setattr__(self, "_head", head)  # a part of `full`, not registered twice
        object.__setattr__(self, "_stage", stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._head(x) if self._stage.cached else self.full(x)

    def state_dict(self, *args, **kwargs):
        return self.full.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.full.load_state_dict(state_dict, strict=strict, assign=assign)


class FeatureStage(Callback):
    """Switches the loop between cached features and full passes at each epoch, by the freeze plan's stage."""

    needs_torch_engine = True

    def __init__(self, console: Console, conf: Config, plan: FreezePlan, model: nn.Module, trained: nn.Module,
                 data: RunData, norm: Normalization, train_loader, val_loader, device: torch.device,
                 channels_last: bool):
        self.console, self.conf, self.plan, self.model = console, conf, plan, model
        self.data, self.norm, self.device, self.channels_last = data, norm, device, channels_last
        self.head_only = head_only_stages(plan)
        self.cached = False
        self.features: Features | None = None
        self.loaders: dict[str, FeatureBatches] = {}
        self.extractions = 0  # features computed by this run (0: all reused)
        self.full_train, self.full_val = train_loader, val_loader
        self.model_switch = HeadSwitch(trained, model.get_submodule(head_name(model)), self)
        self.train_loader = SwitchLoader(self, train_loader, "train")
        self.val_loader = None if val_loader is None else SwitchLoader(self, val_loader, "val")

    def stage_at(self, epoch: int) -> int:
        return max(i for i, s in enumerate(self.plan.stages) if s.first_epoch <= epoch)

    def on_epoch_begin(self, state):
        stage = self.stage_at(state.epoch)
        self.cached = self.head_only[stage]
        if not self.cached:  # the backbone trains now: features computed before would be stale later
            self.features, self.loaders = None, {}
            return
        if self.features is None:
            self.features = self.load_or_compute()
            if self.features is None:  # neither disk nor memory has room: this run trains uncached
                self.head_only = [False] * len(self.head_only)
                self.cached = False
                return
            self.loaders = self.make_loaders(self.features)

    def defers_save(self, state) -> bool:
        """Checkpointer.defer: an epoch end inside a cached stage (the next epoch trains the head on the same
        features) costs less to redo than a checkpoint of the whole model, so it may go unsaved."""
        return self.cached and self.stage_at(state.epoch + 1) == self.stage_at(state.epoch)

    def loader(self, which: str):
        return self.loaders[which]

    def make_loaders(self, features: Features) -> dict[str, FeatureBatches]:
        to = self.full_train.device
        train_labels = torch.from_numpy(self.data.splits.train.labels[self.data.train_rows]).to(to)
        out = {"train": FeatureBatches(self.full_train, features.train.to(to), train_labels, True,
                                       self.full_train.generator, self.data.streamed)}
        if features.val is not None and self.full_val is not None:
            val_labels = torch.from_numpy(self.data.splits.train.labels[self.data.val_rows]).to(to)
            out["val"] = FeatureBatches(self.full_val, features.val.to(to), val_labels, False, None, False)
        return out

    def views(self) -> int:
        return self.conf.finetune.feature_views if self.conf.data.augment != "none" else 0

    def load_or_compute(self) -> Features | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file, save

        key, described = cache_key(self.model, self.data, self.norm, self.conf, self.channels_last, self.device)
        folder = features_home() / key
        if (folder / FEATURES_FILE).is_file():
            try:
                features = self.fitting(load_file(str(folder / FEATURES_FILE)))
                self.console.print(f"features: reused {folder} (computed by an earlier run; same weights, data "
                                   f"and preprocessing)", markup=False)
                return features
            except (OSError, ValueError, KeyError, SafetensorError) as err:  # a cut or damaged file: rebuild it
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                self.console.print(f"features: {folder / FEATURES_FILE} is unreadable ({reason}); computing them "
                                   f"again and rewriting it", markup=False)
        started = time.perf_counter()
        features = self.compute()
        self.extractions += 1
        size = f"{features.nbytes / 1e6:,.1f} MB"
        took = f"{time.perf_counter() - started:.1f}s"
        where = self.room_for(folder, features.nbytes)
        if where == "disk":
            try:
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write(folder / FEATURES_FILE, save({k: v.contiguous() for k, v in features.tensors().items()}))
                (folder / KEY_FILE).write_text(json.dumps(described, indent=1))
            except OSError as err:
                where = f"memory ({folder}: {err.strerror})"
        if where == "none":
            self.console.print(f"features: {size} fit neither on disk nor in memory; training uncached (full "
                               f"forward passes every epoch)", markup=False)
            return None
        shown = str(folder) if where == "disk" else where
        self.console.print(f"features: computed in {took}, {size}, kept in {shown}", markup=False)
        return features

    def fitting(self, tensors: dict[str, torch.Tensor]) -> Features:
        """The stored tensors as Features, or ValueError when their rows do not match this run's data."""
        train, val = tensors["train"], tensors.get("val")
        want_val = 0 if self.data.val_rows is None else len(self.data.val_rows)
        if (train.dim() != 3 or train.shape[0] != max(self.views(), 1) or train.shape[1] != len(self.data.train_rows)
                or (0 if val is None else len(val)) != want_val):
            raise ValueError(f"holds {tuple(train.shape)} training features for {len(self.data.train_rows)} rows")
        return Features(train, val)

    def room_for(self, folder: Path, nbytes: int) -> str:
        """disk, memory (with the reason), or none."""
        home = features_home()
        try:
            home.mkdir(parents=True, exist_ok=True)
            check_free_space(home, 2 * nbytes)  # the file and its temporary copy
            return "disk"
        except (ConvlabError, OSError) as err:
            reason = str(err).split(";")[0] if isinstance(err, ConvlabError) else err.strerror
        free = available_memory()
        if free is not None and nbytes > free // 2:
            return "none"
        return f"memory only ({reason})"

    def compute(self) -> Features:
        data, views = self.data, self.views()
        rows = data.train_rows
        if views:
            augment = build_augmentation(self.conf.data.augment, min(data.splits.shape[1:]), data.splits.hflip)
            generator = torch.Generator().manual_seed(self.conf.train.seed)
            loaders = [row_loader(data, rows, self.norm, self.device, self.channels_last, augment, generator)
                       for _ in range(views)]
        else:
            loaders = [row_loader(data, rows, self.norm, self.device, self.channels_last)]
        if data.val_rows is not None:
            loaders.append(row_loader(data, data.val_rows, self.norm, self.device, self.channels_last))
        count = len(rows) * max(views, 1) + (0 if data.val_rows is None else len(data.val_rows))
        self.console.print(f"features: computing the frozen backbone's output for {count:,} images "
                           f"({max(views, 1)} view{'s' if views > 1 else ''} of {len(rows):,} training images"
                           f"{'' if data.val_rows is None else f', {len(data.val_rows):,} validation'})",
                           markup=False)
        out = extract(self.model, loaders, self.console, "features")
        n_views = max(views, 1)
        train = torch.stack(out[:n_views]).cpu()
        val = out[n_views].cpu() if data.val_rows is not None else None
        return Features(train, val)


def feature_stage(console: Console, conf: Config, plan: FreezePlan, model: nn.Module, trained: nn.Module,
                  data: RunData, norm: Normalization, train_loader, val_loader, device: torch.device,
                  channels_last: bool, distributed: bool) -> FeatureStage | None:
    """The cache for a fine-tune whose plan has a head-only stage, or None (printing why) when it cannot apply."""
    head_only = head_only_stages(plan)
    if not any(head_only) or conf.train.engine != "torch":
        return None
    stages = ", ".join(str(i) for i, cached in enumerate(head_only, start=1) if cached)
    reason = why_uncached(conf, plan, model, distributed)
    if reason is not None:
        console.print(f"features: not cached ({reason}); full forward passes every epoch", markup=False)
        return None
    views = conf.finetune.feature_views if conf.data.augment != "none" else 0
    what = f"{views} augmented views per image" if views else "computed once"
    console.print(f"features: stage {stages} trains the head on cached backbone features ({what}); "
                  f"--no-feature-cache turns this off", markup=False)
    return FeatureStage(console, conf, plan, model, trained, data, norm, train_loader, val_loader, device,
                        channels_last)


__all__ = ["FeatureStage", "cache_key", "feature_stage", "features_home", "why_uncached"]
