"""The instance-segmentation datasets in the data registry: COCO and YOLO-seg files' objects (`--data coco:...
--task instance`, read by segmentation's readers), folders of instance-id PNGs (`instances:DIR`) and generated
shapes (`shape-instances`)."""
from __future__ import annotations

from pathlib import Path

from ...data.download import cache_root
from ...data.registry import register_also, register_dataset
from ...detection.datasets import FILES_RECIPE
from ...detection.targets import DetectionSet
from ...errors import ConvlabError
from .. import datasets  # noqa: F401  (registers coco: and yolo:, which serve instance too)
from ..formats import read_segmentation
from ..synthetic import make_shape_masks
from .formats import INSTANCES_SPEC, read_instance_pngs
from .targets import from_segmentation

FILES_RECIPE = {**FILES_RECIPE, "task": "instance", "model": "maskrcnn_resnet50_fpn", "image_size": 320}
SHAPES_COUNT = (192, 48)  # training and test images of the generated shapes
SHAPES_SEED = 0  # the dataset is fixed; --seed draws the validation images and the training order


def _path(data_dir: Path | None, arg: str) -> str:
    return arg if data_dir is None else str(data_dir / arg)


def _files(kind: str):
    def loader(data_dir: Path | None, arg: str | None, seed: int) -> DetectionSet:
        return from_segmentation(read_segmentation(f"{kind}:{_path(data_dir, arg)}", seed=seed))

    return loader


register_also("coco", "instance", description="instance masks, COCO polygons or RLE: coco:ANNOTATIONS.json"
                                              "[,IMAGES_DIR] or coco:FOLDER --task instance",
              recipe=FILES_RECIPE)(_files("coco"))
register_also("yolo", "instance", description="instance masks, YOLO-seg polygons: yolo:DATA.yaml or yolo:FOLDER "
                                              "--task instance", recipe=FILES_RECIPE)(_files("yolo"))


@register_dataset("instances", description=f"instance masks as instance-id PNGs (0 background, k object k): "
                                           f"{INSTANCES_SPEC}", recipe=FILES_RECIPE, takes_argument=True,
                  task="instance")
def load_instance_pngs(data_dir: Path | None, arg: str | None, seed: int) -> DetectionSet:
    return read_instance_pngs(Path(_path(data_dir, arg)).expanduser(), seed=seed)


@register_dataset("shape-instances", description=f"{sum(SHAPES_COUNT)} generated 64x64 images of squares, discs "
                                                 "and triangles with a mask per shape (instance segmentation; "
                                                 "made on first use)",
                  shape=(3, 64, 64), num_classes=3, task="instance",
                  recipe=dict(task="instance", model="tiny-maskrcnn", optimizer="adam", lr=1e-3, epochs=8,
                              batch_size=8, augment="none", image_size=64, val_fraction=0.1))
def load_shape_instances(data_dir: Path | None, arg: str | None, seed: int) -> DetectionSet:
    folder = (data_dir or cache_root()) / "shape-instances"
    try:
        found = make_shape_masks(folder, *SHAPES_COUNT, seed=SHAPES_SEED)
    except OSError as err:
        raise ConvlabError(f"cannot write the generated shapes to {folder} ({err.strerror}); set CONVLAB_HOME "
                           f"to a writable folder or pass --data-dir") from None
    found.name = "shape-instances"
    return from_segmentation(found)
