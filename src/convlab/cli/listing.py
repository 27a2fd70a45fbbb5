"""`convlab models` and `convlab datasets`: what the registries hold."""
from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list the models", description="List the presets (with layers and "
                            "parameter counts for the given data), every torchvision classifier, the "
                            "detectors and the segmenters.")
    models.add_argument("--data", metavar="NAME", default="mnist",
                        help="count parameters for this dataset's image shape (default: mnist)")
    models.set_defaults(func=cmd_models)

    datasets = sub.add_parser("datasets", help="list the datasets and their default recipes",
                              description="List the datasets with their shapes and default training recipes.")
    datasets.set_defaults(func=cmd_datasets)


def cmd_models(args) -> int:
    from ..data.registry import parse_data_name  # lazy: start-up time
    from ..models.registry import count_parameters, create_model, list_models  # lazy: start-up time

    entry, _ = parse_data_name(args.data)
    channels, height, width = entry.shape or (3, 64, 64)
    classes = entry.num_classes or 10
    print(f"presets (parameters for {channels}x{height}x{width} input, {classes} classes):")
    entries = list_models()
    for model in entries:
        if model.family == "preset":
            params = count_parameters(create_model(model.name, channels, classes, (height, width)))
            print(f"  {model.name:<10} {params:>9,}  {model.description}")
    names = [m.name for m in entries if m.family == "torchvision"]
    print(f"torchvision classifiers ({len(names)}; head sized to the classes, 1-channel input adapted):")
    for name in names:
        print(f"  {name}")
    from ..detection.models import list_detectors  # lazy: start-up time

    print("detectors (for detection data: coco:, yolo:, voc:, shapes; head sized to the classes):")
    for detector in list_detectors():
        print(f"  {detector.name:<38} {detector.description}")
    from ..segmentation.models import list_segmenters  # lazy: start-up time

    print("segmenters (for segmentation data: masks:, shape-masks, coco: with --task segment; head sized to the "
          "classes, 1-channel input adapted):")
    for segmenter in list_segmenters():
        print(f"  {segmenter.name:<38} {segmenter.description}; {segmenter.cpu}")
    from ..segmentation.instance.models import MASK_MODELS  # lazy: start-up time

    print("instance segmenters (for shape-instances, instances:, coco: and yolo: with --task instance):")
    for model in MASK_MODELS.values():
        print(f"  {model.name:<38} {model.description}")
    return 0


CLASSES_FROM = {"imagefolder": "classes from folders"}  # the other datasets name their classes in their files


def cmd_datasets(args) -> int:
    from ..config import RECIPES  # lazy: start-up time
    from ..data.registry import list_datasets  # lazy: start-up time
    from ..tasks import TASKS  # lazy: start-up time (importing the tasks registers their datasets)

    print(f"tasks: {', '.join(f'{name} ({task.description})' for name, task in TASKS.items())}")
    for entry in list_datasets():
        shape = "x".join(map(str, entry.shape)) if entry.shape else "any size"
        classes = f"{entry.num_classes} classes" if entry.num_classes else CLASSES_FROM.get(entry.name,
                                                                                           "classes from files")
        recipe = " ".join(f"{k}={v}" for k, v in entry.recipe.items())
        name = entry.name + (":PATH" if entry.takes_argument else "")
        print(f"{name:<17} {shape:<8} {classes:<21} recipe: {recipe}  -- {entry.description}")
        for task, other in entry.also.items():  # the same files read for another task (--task)
            recipe = " ".join(f"{k}={v}" for k, v in other.recipe.items())
            print(f"{'':<17} {'':<8} {'--task ' + task:<21} recipe: {recipe}  -- {other.description}")
    print("named recipes (--recipe NAME, applied over the dataset's):")
    for name, named in RECIPES.items():
        print(f"  {name:<15} {' '.join(f'{k}={v}' for k, v in named.values.items())}  -- {named.description}")
    return 0
