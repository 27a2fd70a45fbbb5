"""The segmentation datasets in the registry: masks:, shape-masks (generated, then read back through masks:) and
coco:/yolo: serving --task segment with their own loader and recipe."""
import numpy as np
from seg_shapes_files import BY_HAND, assert_same_targets

from convlab.data.registry import DATASETS, parse_data_name
from convlab.segmentation import datasets
from convlab.segmentation.synthetic import make_shape_masks


def test_shape_masks_are_written_as_a_mask_folder_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "SHAPE_MASKS_COUNT", (6, 3))
    entry, arg = parse_data_name("shape-masks")
    assert entry.task == "segment" and entry.recipe["model"] == "tiny-unet" and entry.recipe["image_size"] == 64
    read = entry.loader(tmp_path, arg, 0)
    assert read.name == "shape-masks" and read.classes == ["background", "square", "disc", "triangle"]
    assert (len(read.train), len(read.test)) == (6, 3) and read.notes == [] and read.issues == []
    assert sorted(p.name for p in (tmp_path / "shape-masks" / "train" / "masks").iterdir()) == \
        [f"{i:04d}.png" for i in range(6)]
    made = make_shape_masks(tmp_path / "again", 6, 3, size=64, seed=datasets.SHAPE_MASKS_SEED)
    assert_same_targets(read, made, instances=False)
    assert read.train[0].path.parent == tmp_path / "shape-masks" / "train" / "images"


def test_masks_coco_and_yolo_read_masks_for_the_segment_task(tmp_path):
    made = make_shape_masks(tmp_path / "shapes", 4, 2, size=32, seed=5, max_objects=1)
    entry, arg = parse_data_name(f"masks:{tmp_path / 'shapes'}")
    assert entry.task == "segment" and entry.recipe == datasets.SEG_FILES_RECIPE
    assert_same_targets(entry.loader(None, arg, 0), made, instances=False)
    for fmt in ("coco", "yolo"):
        BY_HAND[fmt](made, tmp_path / fmt)
        entry, arg = parse_data_name(f"{fmt}:{fmt}")
        assert entry.tasks[:2] == ["detect", "segment"]  # (and instance)
        segment = entry.for_task("segment")
        assert segment.task == "segment" and segment.recipe["model"] == "lraspp_mobilenet_v3_large"
        read = segment.loader(tmp_path, arg, 0)  # the path relative to --data-dir, as for detection
        assert_same_targets(read, made)
        boxes = entry.for_task(None).loader(tmp_path, arg, 0)  # detection still reads the same files as boxes
        assert len(boxes.train) == len(read.train) and np.asarray(boxes.train[0].boxes).shape == (1, 4)


def test_the_registered_recipes():
    assert DATASETS["masks"].recipe == dict(task="segment", model="lraspp_mobilenet_v3_large", optimizer="adam",
                                            lr=1e-3, schedule="cosine", epochs=10, batch_size=4, augment="light",
                                            val_fraction=0.1, image_size=320)
    assert DATASETS["shape-masks"].recipe["augment"] == "none" and datasets.SHAPE_MASKS_COUNT == (192, 48)
