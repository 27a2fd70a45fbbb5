"""The segmentation datasets in the data registry: mask folders, COCO and YOLO-seg files (`--task segment`), and
generated shape masks."""
from __future__ import annotations

from pathlib import Path

from ..data.download import cache_root
from ..data.registry import register_also, register_dataset
from ..detection import datasets as _detection  # noqa: F401  (registers coco: and yolo:, which serve segment too)
from ..errors import ConvlabError
from .formats import read_segmentation
from .synthetic import CLASSES, make_shape_masks
from .targets import SegmentationSet

# Files a user brings: a fine-tune of torchvision's LR-ASPP at 320 px.
SEG_FILES_RECIPE = dict(task="segment", model="lraspp_mobilenet_v3_large", optimizer="adam", lr=1e-3,
                        schedule="cosine", epochs=10, batch_size=4, augment="light", val_fraction=0.1, image_size=320)
SHAPE_MASKS_COUNT = (192, 48)  # training and test images of the generated shape masks
SHAPE_MASKS_SIZE = 64
SHAPE_MASKS_SEED = 0  # the dataset is fixed; --seed draws the validation images and the training order


def _files(kind: str):
    def loader(data_dir: Path | None, arg: str | None, seed: int) -> SegmentationSet:
        path = arg if data_dir is None else str(data_dir / arg)
        return read_segmentation(f"{kind}:{path}", seed=seed)

    return loader


register_dataset("masks", description="semantic segmentation, mask folders: masks:DIR (images/ and masks/, class-"
                                      "index PNGs, 255 ignored; or train/ and test/ holding them)",
                 recipe=SEG_FILES_RECIPE, takes_argument=True, task="segment")(_files("masks"))
register_also("coco", "segment", description="segmentation, COCO JSON polygons and RLE: coco:ANNOTATIONS.json"
                                             "[,IMAGES_DIR] or coco:FOLDER", recipe=SEG_FILES_RECIPE)(_files("coco"))
register_also("yolo", "segment", description="segmentation, YOLO-seg polygons: yolo:DATA.yaml or yolo:FOLDER",
              recipe=SEG_FILES_RECIPE)(_files("yolo"))


@register_dataset("shape-masks", description=f"{sum(SHAPE_MASKS_COUNT)} generated {SHAPE_MASKS_SIZE}x"
                                             f"{SHAPE_MASKS_SIZE} images of squares, discs and triangles with "
                                             "exact masks (semantic segmentation; made on first use)",
                  shape=(3, SHAPE_MASKS_SIZE, SHAPE_MASKS_SIZE), num_classes=len(CLASSES), task="segment",
                  recipe=dict(task="segment", model="tiny-unet", optimizer="adam", lr=3e-3, epochs=8, batch_size=8,
                              augment="none", image_size=SHAPE_MASKS_SIZE, val_fraction=0.1))
def load_shape_masks(data_dir: Path | None, arg: str | None, seed: int) -> SegmentationSet:
    """Written as a mask folder and read back through the masks: reader, so the files are what a user's are."""
    folder = (data_dir or cache_root()) / "shape-masks"
    try:
        make_shape_masks(folder, *SHAPE_MASKS_COUNT, size=SHAPE_MASKS_SIZE, seed=SHAPE_MASKS_SEED)
    except OSError as err:
        raise ConvlabError(f"cannot write the generated shape masks to {folder} ({err.strerror}); set CONVLAB_HOME "
                           f"to a writable folder or pass --data-dir") from None
    return read_segmentation(f"masks:{folder}", seed=seed)
