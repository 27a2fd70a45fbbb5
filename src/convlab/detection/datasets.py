"""The detection datasets in the data registry: COCO, YOLO and Pascal VOC files, and generated shapes."""
from __future__ import annotations

from pathlib import Path

from ..data.download import cache_root
from ..data.registry import register_dataset
from ..errors import ConvlabError
from .formats import read_detection
from .synthetic import make_shapes
from .targets import DetectionSet

# The tutorial's engine (torchvision references/detection): SGD 0.005, momentum 0.9, weight decay 5e-4, batch 2.
FILES_RECIPE = dict(task="detect", model="fasterrcnn_mobilenet_v3_large_320_fpn", optimizer="sgd", lr=0.005,
                    momentum=0.9, weight_decay=5e-4, schedule="cosine", epochs=10, batch_size=2, augment="light",
                    val_fraction=0.1)
SHAPES_COUNT = (192, 48)  # training and test images of the generated shapes
SHAPES_SEED = 0  # the dataset is fixed; --seed draws the validation images and the training order


def _files(kind: str, what: str):
    def loader(data_dir: Path | None, arg: str | None, seed: int) -> DetectionSet:
        path = arg if data_dir is None else str(data_dir / arg)
        return read_detection(f"{kind}:{path}", seed=seed)

    register_dataset(kind, description=what, recipe=FILES_RECIPE, takes_argument=True, task="detect")(loader)


_files("coco", "object detection, COCO JSON: coco:ANNOTATIONS.json[,IMAGES_DIR] or coco:FOLDER")
_files("yolo", "object detection, YOLO txt labels: yolo:DATA.yaml or yolo:FOLDER (images/ and labels/)")
_files("voc", "object detection, Pascal VOC XML: voc:DIR (Annotations/, JPEGImages/, ImageSets/Main/)")


@register_dataset("shapes", description=f"{sum(SHAPES_COUNT)} generated 64x64 images of squares, discs and "
                                        "triangles with exact boxes (object detection; made on first use)",
                  shape=(3, 64, 64), num_classes=3, task="detect",
                  recipe=dict(task="detect", model="tiny-detector", optimizer="adam", lr=1e-3, epochs=8,
                              batch_size=8, augment="none", image_size=64, val_fraction=0.1))
def load_shapes(data_dir: Path | None, arg: str | None, seed: int) -> DetectionSet:
    folder = (data_dir or cache_root()) / "shapes"
    try:
        return make_shapes(folder, *SHAPES_COUNT, seed=SHAPES_SEED)
    except OSError as err:
        raise ConvlabError(f"cannot write the generated shapes to {folder} ({err.strerror}); set CONVLAB_HOME "
                           f"to a writable folder or pass --data-dir") from None
