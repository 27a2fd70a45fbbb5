"""Typed run configuration: defaults < dataset recipe < named recipe < YAML file < flags/keywords, checked and
saved."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConvlabError
from .files import atomic_write_text

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["none", "step", "cosine", "onecycle", "poly"]
Augment = Literal["none", "light", "standard", "photo", "randaugment", "trivialaugment", "autoaugment", "augmix"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Strategy = Literal["linear-probe", "full", "two-stage", "gradual"]
Loader = Literal["auto", "memory", "streaming"]
Amp = Literal["auto", "off", "bf16", "fp16"]
Switch = Literal["auto", "on", "off"]
Engine = Literal["torch", "scratch"]
Loss = Literal["ce", "dice", "dice+ce"]
Sampler = Literal["shuffle", "balanced"]
ClassWeights = Literal["none", "auto"]
Calibrate = Literal["none", "temperature"]


def _opt(default, help: str, **checks):
    """A config field with its help text (shown by --help) and value checks (min/max/min_exclusive)."""
    return field(default=default, metadata={"help": help, **checks})


@dataclass(frozen=True)
class NamedRecipe:
    """Settings that work together for a kind of data, applied over the dataset's recipe by --recipe NAME."""

    description: str
    values: dict


RECIPES: dict[str, NamedRecipe] = {
    # The cifar10 dataset's own recipe, for the same photos in an image folder (a ResNet-8 at 32 px).
    "cifar10": NamedRecipe("CIFAR-10-like 32x32 photo folders, from scratch on a CPU",
                           dict(image_size=32, model="resnet8", optimizer="sgd", lr=0.1, momentum=0.9,
                                weight_decay=5e-4, schedule="onecycle", epochs=15, batch_size=128,
                                augment="standard")),
    # timm's and fastai's fine-tuning habits: AdamW, warm-up then cosine, label smoothing, crops and flips.
    "photo": NamedRecipe("fine-tuning an ImageNet backbone on your photographs (finetune --weights)",
                         dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=1.0,
                              label_smoothing=0.1, epochs=10, batch_size=32, augment="photo")),
}


@dataclass
class DataConfig:
    name: str = _opt("digits", "dataset name (see 'convlab datasets'); imagefolder:PATH for your own images")
    data_dir: str | None = _opt(None, "folder holding the dataset's files (default: the cache, then download)")
    image_size: int | None = _opt(None, "resize images to SIZE x SIZE (default: the data's own size; 64 for folders)",
                                  min=4)
    val_fraction: float = _opt(0.1, "share of the training split held out (stratified) for validation", min=0.0,
                               below=1.0)
    augment: Augment = _opt("none", "augmentation: none, light (shifts), standard (shifts + flips where valid); for "
                                    "photographs photo (random-resized crop + flip), randaugment, trivialaugment, "
                                    "autoaugment or augmix (each after photo's crop and flip)")
    erasing: float = _opt(0.0, "random erasing: the share of training images that get a random rectangle erased "
                               "(0: off)", min=0.0, max=1.0)
    mixup: float = _opt(0.0, "mixup: blend pairs of training images and their labels, the weight drawn from "
                             "Beta(ALPHA, ALPHA) (0: off; 0.2 is common)", min=0.0)
    cutmix: float = _opt(0.0, "cutmix: paste a box of one training image into another, labels by area, from "
                              "Beta(ALPHA, ALPHA) (0: off; 1.0 is common)", min=0.0)
    sampler: Sampler = _opt("shuffle", "training order: shuffle, or balanced (classes drawn evenly, images of rare "
                                       "classes repeated) for imbalanced folders")
    classes: str | None = _opt(None, "keep only these classes, comma-separated names (e.g. 5,6,7,8,9); "
                                     "default: all")
    train_per_class: int = _opt(0, "keep N labelled training images per class, chosen with --seed (0: all); "
                                   "the validation share comes out of them", min=0)
    loader: Loader = _opt("auto", "memory: whole dataset as one tensor on the device; streaming: a decoded-image "
                                  "cache on disk (workers read it for a GPU); auto: memory when it fits (folders)")
    strict: bool = _opt(False, "stop at the first unreadable image of a folder instead of skipping it with a warning")
    recipe: str | None = _opt(None, "a named training recipe over the dataset's own (see 'convlab datasets'): "
                                    "cifar10 for CIFAR-10-like image folders from scratch, photo for fine-tuning an "
                                    "ImageNet backbone on photographs")
    task: str | None = _opt(None, "classify, multilabel, detect, segment or instance (default: the dataset's: "
                                   "coco:, yolo:, voc: and shapes are detection, masks: and shape-masks "
                                   "segmentation, a csv: file with several labels in a row multilabel; --task "
                                   "segment reads the masks of coco: and yolo: files)")


@dataclass
class ModelConfig:
    name: str = _opt("small-cnn", "model name (see 'convlab models'): a preset or any torchvision classifier")
    dropout: float = _opt(0.0, "dropout probability before each fully connected layer", min=0.0, below=1.0)


@dataclass
class OptimConfig:
    optimizer: Optimizer = _opt("adam", "optimizer")
    lr: float = _opt(1e-3, "learning rate (the peak rate for onecycle)", min_exclusive=0.0)
    momentum: float = _opt(0.9, "momentum for sgd", min=0.0, below=1.0)
    weight_decay: float = _opt(0.0, "L2 weight decay", min=0.0)
    schedule: Schedule = _opt("none", "learning-rate schedule")
    label_smoothing: float = _opt(0.0, "label smoothing for the cross-entropy loss", min=0.0, below=1.0)
    class_weights: ClassWeights = _opt("none", "none, or auto: weight each class's loss by its inverse frequency "
                                               "in the training split (imbalanced folders)")
    warmup_epochs: float = _opt(0.0, "raise the learning rate linearly from near 0 over the first N epochs, then "
                                     "follow the schedule (any schedule)", min=0.0)
    grad_accum: int = _opt(1, "accumulate the gradients of K batches before each optimizer step (an effective "
                              "batch of K x batch_size)", min=1)
    clip_grad: float = _opt(0.0, "clip the gradients' global L2 norm to NORM before each step (0: off)", min=0.0)
    ema: float = _opt(0.0, "keep an exponential moving average of the weights with this DECAY per step (e.g. "
                           "0.999), validate it and save it as the model (0: off)", min=0.0, below=1.0)
    loss: Loss = _opt("ce", "the training loss: ce (cross-entropy), or for segmentation dice or dice+ce (binary "
                            "and medical masks: the Dice overlap ignores how large the background is)")


@dataclass
class TrainConfig:
    epochs: int = _opt(10, "number of passes over the training split", min=1)
    batch_size: int = _opt(64, "images per training step", min=1)
    early_stop: int = _opt(0, "stop after PATIENCE epochs without a better validation accuracy (0: off)", min=0)
    seed: int = _opt(0, "random seed: the same seed gives the same metrics on CPU", min=0)
    device: Device = _opt("auto", "where to train: auto picks cuda, then mps, then cpu")
    out: str | None = _opt(None, "run folder (default: runs/<data>-<model>-<timestamp>)")
    quiet: bool = _opt(False, "plain one-line-per-epoch output instead of progress bars")
    tensorboard: bool = _opt(False, "log loss, accuracy, lr and the validation confusion matrix to "
                                    "RUN_DIR/tensorboard (needs the tensorboard package: the tensorboard extra)")
    threads: int = _opt(0, "CPU threads for torch (0: the cores other processes leave idle)", min=0)
    channels_last: Switch = _opt("auto", "NHWC memory format (auto: on for conv nets on CPU and CUDA)")
    amp: Amp = _opt("auto", "mixed precision (auto: bf16 on CUDA where supported, else fp16; off on CPU)")
    compile: bool = _opt(False, "torch.compile the model (slow start, faster steps on long GPU runs)")
    deterministic: bool = _opt(False, "deterministic kernels and fixed threads: a rerun or a resumed run gives "
                                      "bit-identical weights (slower on GPU)")
    engine: Engine = _opt("torch", "torch, or scratch: the NumPy engine written by hand (presets, CPU only)")
    calibrate: Calibrate = _opt("none", "temperature: after training, fit one temperature (one per label for "
                                        "multi-label) on the validation rows so the probabilities match how often "
                                        "the model is right; predict, eval, serve and export apply it")
    checkpoint_every: int = _opt(0, "also save the training state every STEPS batches inside an epoch, so a failure "
                                    "loses minutes, not an epoch (0: at the end of each epoch only)", min=0)
    dist_timeout: int = _opt(300, "under torchrun: seconds a process waits for the others (joining, each "
                                  "collective) before the job fails", min=1)


@dataclass
class FinetuneConfig:
    """Only `convlab finetune` sets these; a run trained from scratch has no finetune section."""

    source: str | None = _opt(None, "what to start from: a run folder, torchvision:NAME or timm:NAME")
    weights: str | None = _opt(None, "pretrained weights: imagenet or DEFAULT (the source's best), a weights enum "
                                     "name (IMAGENET1K_V1), or a .safetensors/.pt/.pth file (default: the run's "
                                     "own weights, or DEFAULT)")
    strategy: Strategy = _opt("two-stage", "linear-probe (only the head trains), full, two-stage (head first, then "
                                           "all with a lower backbone lr) or gradual (one more stage per epoch)")
    head_epochs: int = _opt(1, "two-stage: epochs that train the head alone before everything unfreezes", min=1)
    backbone_lr_mult: float = _opt(0.1, "backbone learning rate = --lr x this, once the backbone trains",
                                   min_exclusive=0.0)
    freeze: str | None = _opt(None, "what stays frozen throughout: backbone, stages:N (the stem and the first N "
                                    "stages) or group names / parameter-name prefixes, comma-separated")
    train_bn: bool = _opt(False, "let frozen BatchNorm layers update their running statistics (default: "
                                 "frozen BatchNorm runs in eval mode)")
    head: str = _opt("linear", "the new classifier: linear, or mlp:WIDTH[,dropout=P] (global pooling -> "
                               "Linear(WIDTH) -> ReLU -> [Dropout(P)] -> Linear(classes), e.g. mlp:1024)")
    no_feature_cache: bool = _opt(False, "full forward passes every epoch; by default, while the backbone is "
                                         "frozen (linear-probe, the head stage of two-stage/gradual), the head "
                                         "trains on its features computed once (kept in $CONVLAB_HOME/features)")
    feature_views: int = _opt(0, "with --augment: cache N augmented views of each training image (drawn with "
                                 "--seed) and train the head on them; 0: train uncached", min=0)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """The config as flat keys (the names of the CLI flags and of the Python keywords)."""
        return {key: getattr(getattr(self, section), name) for key, (section, name) in FLAT_KEYS.items()}


_SECTION_CLASSES = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig,
                    "finetune": FinetuneConfig}
TRAIN_SECTIONS = ("data", "model", "optim", "train")  # what `convlab train` takes; finetune adds "finetune"


def _flat_keys() -> dict[str, tuple[str, str]]:
    """Flat key -> (section, field). A section's `name` field is the section's own flat key (--data, --model)."""
    keys = {}
    for section, cls in _SECTION_CLASSES.items():
        for f in dataclasses.fields(cls):
            keys[section if f.name == "name" else f.name] = (section, f.name)
    return keys


FLAT_KEYS = _flat_keys()


def field_info(key: str) -> dataclasses.Field:
    section, name = FLAT_KEYS[key]
    return {f.name: f for f in dataclasses.fields(_SECTION_CLASSES[section])}[name]


def field_type(key: str) -> Any:
    hints = typing.get_type_hints(_SECTION_CLASSES[FLAT_KEYS[key][0]])
    return hints[FLAT_KEYS[key][1]]


def choices(key: str) -> tuple[str, ...] | None:
    kind = field_type(key)
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def coerce(key: str, value: Any, source: str) -> Any:
    """Check one value against its field's type and limits; `source` names where it came from."""
    if key not in FLAT_KEYS:
        import difflib

        close = difflib.get_close_matches(key, list(FLAT_KEYS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConvlabError(f"{source}: unknown setting '{key}'.{hint}")
    kind = field_type(key)
    where = f"{source}: {key}" if source != "flags" else flag(key)
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return None
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    options = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
    if options is not None:
        if value not in options:
            raise ConvlabError(f"invalid value for {where}: {value!r}; choose from {', '.join(options)}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConvlabError(f"invalid value for {where}: {value!r}; expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConvlabError(f"invalid value for {where}: {value!r}; expected a whole number")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConvlabError(f"invalid value for {where}: {value!r}; expected a number")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str) or not value:
            raise ConvlabError(f"invalid value for {where}: {value!r}; expected text")
    _check_limits(key, value, where)
    return value


def _check_limits(key: str, value: Any, where: str) -> None:
    meta = field_info(key).metadata
    if "min" in meta and value < meta["min"]:
        raise ConvlabError(f"invalid value for {where}: {value}; must be >= {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ConvlabError(f"invalid value for {where}: {value}; must be <= {meta['max']}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise ConvlabError(f"invalid value for {where}: {value}; must be > {meta['min_exclusive']}")
    if "below" in meta and value >= meta["below"]:
        raise ConvlabError(f"invalid value for {where}: {value}; must be < {meta['below']}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config (nested sections as saved in a run, or flat keys) into checked flat keys."""
    path = Path(path)
    if not path.is_file():
        raise ConvlabError(f"--config {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0]
        raise ConvlabError(f"--config {path}: not valid YAML ({reason})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConvlabError(f"--config {path}: expected a mapping of settings, got {type(raw).__name__}")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECTION_CLASSES and isinstance(value, dict):
            for name, inner in value.items():
                flat_key = key if name == "name" else name
                if flat_key not in FLAT_KEYS or FLAT_KEYS[flat_key] != (key, name):
                    raise ConvlabError(f"{path}: unknown setting '{key}.{name}'")
                flat[flat_key] = coerce(flat_key, inner, str(path))
        elif key in ("convlab", "provenance"):
            continue  # informational blocks written into saved runs
        else:
            flat[key] = coerce(key, value, str(path))
    return flat


def resolve(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None,
            recipe_for=None) -> tuple[Config, dict[str, str]]:
    """Build the run's config: defaults, then the dataset's recipe, then the file, then the overrides.

    `recipe_for(data_name, task) -> dict` supplies the dataset recipe (task: --task or the file's, else None).
    Returns the config and, per flat key, where its value came from ("default", "recipe", "file", "flag") for
    the printed summary.
    """
    from_file = read_config_file(config_file) if config_file else {}
    from_flags = {key: coerce(key, value, "flags") for key, value in (overrides or {}).items() if value is not None}
    data_name = from_flags.get("data", from_file.get("data", DataConfig.name))
    task = from_flags.get("task", from_file.get("task"))
    recipe = dict(recipe_for(data_name, task)) if recipe_for else {}
    for key, value in recipe.items():
        recipe[key] = coerce(key, value, f"recipe of {data_name}")
    named = from_flags.get("recipe", from_file.get("recipe"))
    if named is not None:
        if named not in RECIPES:
            raise ConvlabError(f"invalid value for --recipe: {named!r}; choose from {', '.join(RECIPES)}")
        recipe.update({key: coerce(key, value, f"recipe {named}") for key, value in RECIPES[named].values.items()})

    config = Config()
    origin = {key: "default" for key in FLAT_KEYS}
    for layer_name, layer in (("recipe", recipe), ("file", from_file), ("flag", from_flags)):
        for key, value in layer.items():
            section, name = FLAT_KEYS[key]
            setattr(getattr(config, section), name, value)
            origin[key] = layer_name
    return config, origin


def save_config(config: Config, path: Path, extra: dict | None = None) -> None:
    document = config.to_dict()
    if config.finetune.source is None:
        del document["finetune"]  # a run trained from scratch: nothing to say
    if extra:
        document.update(extra)
    atomic_write_text(path, yaml.safe_dump(document, sort_keys=False))


def load_saved_config(path: Path) -> Config:
    """Load a run's config.yaml back into a Config (all keys present, already resolved)."""
    config, _ = resolve(config_file=path)
    return config
