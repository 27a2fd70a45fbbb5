"""Fine-tuning: a pretrained source (a run folder, torchvision:NAME, timm:NAME) as the pipeline's `Start`.

The pipeline does the rest: the head is rebuilt for the new classes and the model trains by conf.finetune's
strategy and --freeze (training/freezing.py). The run folder is the same as `train`'s; config.yaml adds a
finetune section (source, weights, strategy) and preprocess.json records the input the weights expect.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import config as cfg
from .errors import ConvlabError
from .layout import WEIGHTS

# What a fine-tune uses is imported when one runs: `import convlab` binds `finetune` without torch.
if TYPE_CHECKING:
    from rich.console import Console

    from .models.pretrained import Pretrained
    from .pipeline import Job, Start
    from .run import Run

SECTIONS = cfg.TRAIN_SECTIONS + ("finetune",)


def finetune(source: str | Path | None = None, config: str | Path | None = None, *, console: Console | None = None,
             resume: str | Path | None = None, callbacks: list | None = None, **overrides) -> Run:
    """Fine-tune `source` (a run folder, "torchvision:NAME" or "timm:NAME") on `data` and write a run folder.

    Keywords are the CLI's flags (data=, strategy=, weights=, epochs=, train_per_class=, ...). `resume` is a
    fine-tune run folder whose last checkpoint is continued, in the freeze state of its stage; `callbacks` run
    before the built-in ones, as for `convlab.train`.
    """
    from .pipeline import run_pipeline  # lazy: start-up time

    return run_pipeline(finetune_job(source, config, console=console, resume=resume, callbacks=callbacks,
                                     **overrides))


def finetune_job(source: str | Path | None = None, config: str | Path | None = None, *,
                 console: Console | None = None, resume: str | Path | None = None, callbacks: list | None = None,
                 **overrides) -> Job:
    """The Job `finetune` runs, for commands that use it before running it (the learning-rate finder)."""
    from .pipeline import Job, resolve_job_config  # lazy: start-up time
    from .tasks import task_of  # lazy: start-up time

    if source is not None:
        overrides["source"] = str(source)
    conf, origin = resolve_job_config(overrides, config, resume, "convlab.finetune()")
    if conf.finetune.source is None:
        raise ConvlabError("finetune needs --from SOURCE: a run folder, torchvision:NAME or timm:NAME")
    start = STARTS[task_of(conf).name](conf, origin)
    return Job(conf, origin, start, "finetune", resume is not None, callbacks=list(callbacks or []),
               sections=SECTIONS, console=console)


def classifier_start(conf: cfg.Config, origin: dict[str, str]) -> Start:
    """A classifier fine-tune: the source's network and weights, a new head for the data's classes."""
    from .models.heads import parse_head  # lazy: start-up time (`import convlab` needs no torch)

    parse_head(conf.finetune.head)  # a wrong --head fails before the source is loaded
    pretrained = load_source(conf.finetune.source, conf.finetune.weights)
    take_from_source(conf, origin, pretrained)
    start = pretrained_start(conf, pretrained)
    note = unaugmented_head(conf, origin)
    if note:
        start.notes.append(note)
    return start


def detector_start(conf: cfg.Config, origin: dict[str, str], models: dict | None = None, build_model=None,
                   on_backbone: str = "fasterrcnn") -> Start:
    """A detector fine-tune. --from names a detector (torchvision:fasterrcnn_..., its COCO weights with --weights:
    the class layers are rebuilt) or a classification network to build one on (torchvision:NAME with an ImageNet
    --weights FILE, or a convlab run folder: the texts' fine-tuning, a pretrained feature extractor).

    `models` and `build_model` are another table of detectors and its builder (instance_start's Mask R-CNNs),
    `on_backbone` the model name a run built on a classification network records."""
    from .detection.models import DETECTORS, build_detector  # lazy: start-up time
    from .models.pretrained import parse_source  # lazy: start-up time
    from .pipeline import Start  # lazy: start-up time

    models, build_model = models or DETECTORS, build_model or build_detector
    kind, name = parse_source(conf.finetune.source)
    detector = kind == "torchvision" and name in models
    if detector:
        if origin["model"] in ("flag", "file") and conf.model.name != name:
            raise ConvlabError(f"--model {conf.model.name} does not match --from {conf.finetune.source}; leave "
                               f"--model out, the source decides the detector")
        conf.model.name, origin["model"] = name, "source"
        weights, backbone = conf.finetune.weights, None
    else:  # the tutorial's second way: a Faster R-CNN on the network's features
        weights, backbone = None, conf.finetune.source
        conf.model.name, origin["model"] = on_backbone, "source"

    def build(channels: int, classes: int, image_size: tuple[int, int], dropout: float):
        return build_model(conf.model.name, classes, max(image_size), weights=weights, backbone=backbone,
                           backbone_weights=None if detector else conf.finetune.weights)

    what = f"{conf.model.name} from {conf.finetune.source}" if detector else f"a detector on {backbone}'s features"
    return Start(build, freeze=True, notes=[f"fine-tuning {what}" + (f" with weights {conf.finetune.weights}"
                                                                       if conf.finetune.weights else "")])


def instance_start(conf: cfg.Config, origin: dict[str, str]) -> Start:
    """A Mask R-CNN fine-tune, as a detector's: --from torchvision:maskrcnn_resnet50_fpn (COCO --weights, class
    layers rebuilt) or a classification network (torchvision:NAME with --weights, or a run folder) under it."""
    from .segmentation.instance.models import MASK_MODELS, build_mask_model  # lazy: start-up time

    return detector_start(conf, origin, MASK_MODELS, build_mask_model, "maskrcnn")


def segmenter_start(conf: cfg.Config, origin: dict[str, str]) -> Start:
    """A segmenter fine-tune. --from names a segmenter (torchvision:lraspp_..., its weights with --weights: the
    class layers are rebuilt) or a classification network to build a U-Net on (torchvision:NAME with an
    ImageNet --weights FILE, or a convlab run folder: its features become the encoder)."""
    from .models.pretrained import parse_source  # lazy: start-up time
    from .pipeline import Start  # lazy: start-up time
    from .segmentation.models import SEGMENTERS, build_segmenter  # lazy: start-up time

    kind, name = parse_source(conf.finetune.source)
    segmenter = kind == "torchvision" and name in SEGMENTERS
    if segmenter:
        if origin["model"] in ("flag", "file") and conf.model.name != name:
            raise ConvlabError(f"--model {conf.model.name} does not match --from {conf.finetune.source}; leave "
                               f"--model out, the source decides the segmenter")
        conf.model.name, origin["model"] = name, "source"
        weights, backbone = conf.finetune.weights, None
    else:  # a U-Net whose encoder is the pretrained classification network
        weights, backbone = None, conf.finetune.source
        conf.model.name, origin["model"] = "unet", "source"

    def build(channels: int, classes: int, image_size: tuple[int, int], dropout: float):
        return build_segmenter(conf.model.name, classes, channels, weights=weights, backbone=backbone,
                               backbone_weights=None if segmenter else conf.finetune.weights)

    what = f"{conf.model.name} from {conf.finetune.source}" if segmenter else f"a U-Net on {backbone}'s features"
    norm, channels, norm_from = source_input(conf.finetune.source, conf.finetune.weights)
    return Start(build, channels=channels, norm=norm, normalization_from=norm_from, freeze=True,
                 notes=[f"fine-tuning {what}" + (f" with weights {conf.finetune.weights}" if conf.finetune.weights
                                                 else "")])


def source_input(source: str, weights: str | None):
    """The normalization and channels pretrained weights expect, without loading them: ImageNet's for torchvision
    weights, a run folder's own; (None, None, ...) when there are no weights (measured on the data)."""
    import json

    from .data.batches import Normalization  # lazy: start-up time
    from .layout import PREPROCESS
    from .models.pretrained import parse_source  # lazy: start-up time

    kind, name = parse_source(source)
    if kind != "run":
        if weights is None:
            return None, None, "training data"
        return Normalization([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), 3, f"pretrained: ImageNet ({weights})"
    try:
        document = json.loads((Path(name).expanduser() / PREPROCESS).read_text())
        return (Normalization(document["mean"], document["std"]), int(document["channels"]),
                f"pretrained: the source run {name}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConvlabError(f"--from {source}: cannot read its {PREPROCESS} ({err}); give a finished convlab run "
                           f"folder") from None


# The task's way to start a fine-tune (tasks/): what --from and --weights mean for it.
STARTS = {"classify": classifier_start, "multilabel": classifier_start, "detect": detector_start,
          "segment": segmenter_start, "instance": instance_start}


def pretrained_start(conf: cfg.Config, pretrained: Pretrained) -> Start:
    """The source's architecture with its weights, the head left as built for the new classes."""
    from .data.batches import Normalization  # lazy: start-up time
    from .models.heads import put_head  # lazy: start-up time
    from .models.pretrained import load_backbone  # lazy: start-up time
    from .models.registry import create_model  # lazy: start-up time
    from .pipeline import Start  # lazy: start-up time

    size = (conf.data.image_size,) * 2 if conf.data.image_size else None
    norm = Normalization(list(pretrained.mean), list(pretrained.std)) if pretrained.mean is not None else None

    def build(channels: int, classes: int, image_size: tuple[int, int], dropout: float):
        model = put_head(create_model(conf.model.name, channels, classes, image_size, dropout), conf.finetune.head,
                         classes)
        if pretrained.state is not None:
            load_backbone(model, pretrained.state, weights_place(pretrained))
        return model

    return Start(build, channels=pretrained.channels, size=size, norm=norm,
                 normalization_from=pretrained.normalization_from, freeze=True, notes=list(pretrained.notes))


# --- the source -----------------------------------------------------------------------------------------

def load_source(source: str, weights: str | None) -> Pretrained:
    """A run folder, torchvision:NAME or timm:NAME -> the model name, weights and expected input."""
    from .models.pretrained import (Pretrained, parse_source, read_weights_file, timm_source,  # lazy: start-up
                                    torchvision_source)
    from .run import load_run  # lazy: start-up time
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
        state, chosen = run.model.state_dict(), str(path / WEIGHTS)
    height, width = run.preprocess.size
    return Pretrained(str(path), run.config.model.name, chosen, state, channels=run.preprocess.channels,
                      image_size=height if height == width else None, mean=list(run.preprocess.mean),
                      std=list(run.preprocess.std))


def take_from_source(conf: cfg.Config, origin: dict[str, str], pretrained: Pretrained) -> None:
    """The source decides the model and, unless --image-size says otherwise, the input size."""
    if origin["model"] in ("flag", "file") and conf.model.name != pretrained.model_name:
        raise ConvlabError(f"--model {conf.model.name} does not match --from {pretrained.source} (a "
                           f"{pretrained.model_name}); leave --model out, the source decides the model")
    conf.model.name, origin["model"] = pretrained.model_name, "source"
    if conf.data.image_size is None and pretrained.image_size:
        conf.data.image_size, origin["image_size"] = pretrained.image_size, "source"
    if conf.finetune.weights is None:
        conf.finetune.weights, origin["weights"] = pretrained.weights, "source"


def unaugmented_head(conf: cfg.Config, origin: dict[str, str]) -> str | None:
    """A fine-tune that never trains the backbone trains its head on features computed once (the feature cache);
    the dataset recipe's augmentation would recompute them every epoch, so it is left out unless asked for by a
    flag or the config file. Returns the note that says so, or None when nothing changes."""
    if origin["augment"] != "recipe" or conf.data.augment == "none" or conf.finetune.no_feature_cache:
        return None
    if conf.finetune.freeze != "backbone" and not head_only_strategy(conf):
        return None
    recipe = conf.data.augment
    conf.data.augment, origin["augment"] = "none", "default"
    return (f"augment none: --strategy {conf.finetune.strategy} trains only the head, on backbone features "
            f"computed once; the dataset recipe's --augment {recipe} would recompute them every epoch (pass "
            f"--augment {recipe} --feature-views K to train on K cached augmented views)")


def head_only_strategy(conf: cfg.Config) -> bool:
    """Whether every stage of conf's strategy trains only the head (an unknown strategy is refused later)."""
    from .models.freeze import HEAD, STRATEGIES  # lazy: start-up time

    if conf.finetune.strategy not in STRATEGIES:
        return False
    try:
        stages = STRATEGIES[conf.finetune.strategy][0](["backbone", HEAD], conf.train.epochs,
                                                        conf.finetune.head_epochs)
    except ConvlabError:  # refused with its own message when the run plans its stages
        return False
    return all(stage.trainable == [HEAD] for stage in stages)


def weights_place(pretrained: Pretrained) -> str:
    from .models.weights import WEIGHT_SUFFIXES  # lazy: start-up time
    if Path(str(pretrained.weights)).suffix in WEIGHT_SUFFIXES:
        return f"weights file {pretrained.weights}"
    return f"the weights of {pretrained.source} ({pretrained.weights})"
