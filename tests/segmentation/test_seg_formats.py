"""The segmentation readers: the same shapes as mask PNGs, COCO polygons and RLE, and YOLO-seg polygons give the
same targets; each layout's conventions and its one-line errors."""
import json

import numpy as np
import pytest
import yaml
from PIL import Image
from seg_shapes_files import BY_HAND, assert_same_targets, outline, rle

from convlab.errors import ConvlabError
from convlab.segmentation.formats import FORMATS, read_segmentation
from convlab.segmentation.synthetic import make_shape_masks
from convlab.segmentation.targets import IGNORE


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One shape an image (squares, discs, triangles): every object is a polygon on pixel corners."""
    return make_shape_masks(tmp_path_factory.mktemp("single"), n_train=9, n_test=4, size=40, seed=1, max_objects=1)


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """Up to 3 shapes an image, later ones covering earlier ones: objects are what stays visible."""
    return make_shape_masks(tmp_path_factory.mktemp("many"), n_train=8, n_test=3, size=40, seed=2, max_objects=3)


def test_the_shapes_cover_every_class_and_overlap(single, overlapping):
    assert {int(label) for item in single.train + single.test for label in item.labels} == {1, 2, 3}
    assert any(len(item.labels) > 1 for item in overlapping.train)


def test_a_mask_folder_reads_back_what_was_drawn(single):
    read = read_segmentation(f"masks:{single.train[0].path.parents[2]}")
    assert_same_targets(read, single, instances=False)
    assert read.issues == [] and read.notes == [] and read.split_names == {"train": "train", "test": "test"}
    assert all(item.instances is None for item in read.train)


@pytest.mark.parametrize("fmt", sorted(BY_HAND))
def test_polygons_and_rle_written_by_hand_give_the_same_targets(single, tmp_path, fmt):
    BY_HAND[fmt](single, tmp_path)
    read = read_segmentation(f"{fmt}:{tmp_path}")
    assert_same_targets(read, single)
    assert read.issues == [] and read.notes == []


def test_coco_rle_of_overlapping_shapes_gives_the_painted_mask(overlapping, tmp_path):
    BY_HAND["coco"](overlapping, tmp_path, polygons=False)
    assert_same_targets(read_segmentation(f"coco:{tmp_path}"), overlapping)


def test_every_format_is_tested():
    assert sorted(FORMATS) == sorted([*BY_HAND, "masks"])


# mask folders


def _folder(root, masks, classes=None, image_sizes=None, split=""):
    """root/[split/]images/NAME.png (RGB noise) and root/[split/]masks/NAME.png (mode L) from {NAME: mask}."""
    base = root / split if split else root
    for part in ("images", "masks"):
        (base / part).mkdir(parents=True, exist_ok=True)
    for name, mask in masks.items():
        height, width = (image_sizes or {}).get(name, mask.shape)
        Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(base / "images" / f"{name}.png")
        Image.fromarray(np.asarray(mask, np.uint8), mode="L").save(base / "masks" / f"{name}.png")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def _mask(value=1, size=(6, 8)):
    mask = np.zeros(size, np.uint8)
    mask[1:4, 2:5] = value
    return mask


def test_a_palette_mask_gives_its_indices_not_its_colours(tmp_path):
    _folder(tmp_path, {"a": _mask(2)}, classes=["background", "cat", "dog"])
    palette = Image.fromarray(_mask(2), mode="P")
    palette.putpalette([0, 0, 0, 250, 10, 10, 10, 250, 10] + [0] * 759)
    palette.save(tmp_path / "masks" / "a.png")
    assert Image.open(tmp_path / "masks" / "a.png").mode == "P"
    read = read_segmentation(f"masks:{tmp_path}")
    np.testing.assert_array_equal((read.train + read.test)[0].mask, _mask(2))


def test_one_split_is_split_by_image_with_the_seed(tmp_path):
    _folder(tmp_path, {f"{i:02d}": _mask(1 + i % 2) for i in range(10)}, classes=["background", "a", "b"])
    read = read_segmentation(f"masks:{tmp_path}", seed=3)
    assert (len(read.train), len(read.test)) == (8, 2)
    note = f"{tmp_path.name} has one split (train): 2 of 10 images held out as the test split, by image with seed 3"
    assert read.notes == [note]
    again, other = read_segmentation(f"masks:{tmp_path}", seed=3), read_segmentation(f"masks:{tmp_path}", seed=4)
    assert [i.path for i in again.test] == [i.path for i in read.test] != [i.path for i in other.test]


def test_train_and_val_folders_are_the_splits_and_data_yaml_names_the_classes(tmp_path):
    _folder(tmp_path, {"a": _mask(1)}, split="train")
    _folder(tmp_path, {"b": _mask(2), "c": _mask(IGNORE)}, split="val")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": {0: "background", 1: "road", 2: "car"}}))
    read = read_segmentation(f"masks:{tmp_path}")
    assert read.classes == ["background", "road", "car"]
    assert [i.path.name for i in read.train] == ["a.png"] and [i.path.name for i in read.test] == ["b.png", "c.png"]
    assert read.split_names == {"train": "train", "test": "val"} and read.notes == []
    assert read.test[1].mask.max() == IGNORE
    assert [item.image_id for item in read.train + read.test] == [1, 2, 3]


def test_without_names_the_classes_are_numbered_up_to_the_largest_index(tmp_path):
    _folder(tmp_path, {"a": _mask(3), "b": _mask(IGNORE)})
    read = read_segmentation(f"masks:{tmp_path}")
    assert read.classes == ["background", "class1", "class2", "class3"]
    assert "no classes.txt or data.yaml" in read.notes[0] and "largest index in the masks is 3" in read.notes[0]


def test_masks_of_0_and_255_only_get_a_note(tmp_path):
    _folder(tmp_path, {"a": _mask(IGNORE), "b": _mask(0)}, classes=["background", "lesion"])
    read = read_segmentation(f"masks:{tmp_path}")
    assert any("only 0 and 255" in note for note in read.notes)


def _one_line_error(spec, *names):
    with pytest.raises(ConvlabError) as err:
        read_segmentation(spec)
    message = str(err.value)
    assert "\n" not in message and all(str(name) in message for name in names), message
    return message


def test_a_mask_of_another_size_is_refused_by_file(tmp_path):
    _folder(tmp_path, {"a": _mask(1), "b": _mask(1)}, classes=["background", "x"], image_sizes={"b": (6, 9)})
    message = _one_line_error(f"masks:{tmp_path}", tmp_path / "masks" / "b.png", tmp_path / "images" / "b.png")
    assert "8 x 6" in message and "9 x 6" in message


def test_a_class_index_the_names_do_not_name_is_refused_by_file(tmp_path):
    _folder(tmp_path, {"a": _mask(1), "b": _mask(4)}, classes=["background", "x"])
    message = _one_line_error(f"masks:{tmp_path}", tmp_path / "images" / "b.png", tmp_path / "classes.txt")
    assert "class index 4" in message and "2 classes" in message


def test_an_image_without_its_mask_is_named(tmp_path):
    _folder(tmp_path, {"a": _mask(1), "b": _mask(1)}, classes=["background", "x"])
    (tmp_path / "masks" / "b.png").unlink()
    message = _one_line_error(f"masks:{tmp_path}", tmp_path / "images" / "b.png")
    assert "no mask" in message


def test_a_colour_mask_is_refused_by_file(tmp_path):
    _folder(tmp_path, {"a": _mask(1)}, classes=["background", "x"])
    Image.new("RGB", (8, 6)).save(tmp_path / "masks" / "a.png")
    assert "palette (P) or gray (L)" in _one_line_error(f"masks:{tmp_path}", tmp_path / "masks" / "a.png")


def test_a_16_bit_mask_within_0_255_is_read_and_over_255_is_refused(tmp_path):
    _folder(tmp_path, {"a": _mask(1)}, classes=["background", "x"])
    Image.fromarray(_mask(1).astype(np.uint16)).save(tmp_path / "masks" / "a.png")
    np.testing.assert_array_equal(read_segmentation(f"masks:{tmp_path}").train[0].mask, _mask(1))
    Image.fromarray(_mask(1).astype(np.uint16) * 300).save(tmp_path / "masks" / "a.png")
    assert "value 300, outside 0-255" in _one_line_error(f"masks:{tmp_path}", tmp_path / "masks" / "a.png")


def test_an_unreadable_mask_or_image_is_skipped_and_listed(tmp_path):
    _folder(tmp_path, {"a": _mask(1), "b": _mask(1), "c": _mask(1)}, classes=["background", "x"])
    (tmp_path / "masks" / "b.png").write_bytes(b"not a png")
    data = (tmp_path / "images" / "c.png").read_bytes()
    (tmp_path / "images" / "c.png").write_bytes(data[:20])
    read = read_segmentation(f"masks:{tmp_path}")
    assert [i.path.name for i in read.train + read.test] == ["a.png"]
    assert sorted(issue["path"] for issue in read.issues) == [str(tmp_path / "images" / "c.png"),
                                                              str(tmp_path / "masks" / "b.png")]
    assert all(issue["problem"] for issue in read.issues)


def test_a_folder_without_masks_says_the_layout(tmp_path):
    (tmp_path / "images").mkdir()
    assert "masks:DIR with images/ and masks/" in _one_line_error(f"masks:{tmp_path}", tmp_path / "masks")
    assert "not a segmentation dataset" in _one_line_error(f"voc:{tmp_path}")


# COCO and YOLO-seg conventions


def _coco(folder, annotations, size=(20, 16)):
    Image.new("RGB", size).save(folder / "a.png")
    (folder / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": size[0], "height": size[1]}],
        "annotations": [{"id": k, "image_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 0, **ann}
                        for k, ann in enumerate(annotations, 1)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    return f"coco:{folder / 'instances.json'}"


def _square(x, y, side):
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def test_coco_overlaps_of_two_classes_and_crowds_are_ignored(tmp_path):
    crowd = np.zeros((16, 20), bool)
    crowd[10:16, 0:20] = True
    spec = _coco(tmp_path, [{"category_id": 1, "segmentation": _square(0, 0, 6)},
                            {"category_id": 2, "segmentation": _square(4, 4, 6)},  # overlaps the cat: 2 x 2 px
                            {"category_id": 2, "segmentation": _square(8, 8, 4)},  # overlaps the dog: still dog
                            {"category_id": 1, "segmentation": rle(crowd), "iscrowd": 1}])
    item = read_segmentation(spec).train[0]
    want = np.zeros((16, 20), np.uint8)
    want[0:6, 0:6] = 1
    want[4:10, 4:10] = 2
    want[8:12, 8:12] = 2
    want[4:6, 4:6] = IGNORE
    want[12:16, :] = IGNORE  # the crowd where no object is
    want[10:12, 0:20] = IGNORE
    want[10:12, 8:12] = 2
    np.testing.assert_array_equal(item.mask, want)
    assert item.instances.shape == (3, 16, 20) and item.labels.tolist() == [1, 2, 2]  # the crowd is no object
    assert read_segmentation(spec).classes == ["background", "cat", "dog"]


def test_coco_annotations_without_a_segmentation_get_a_note(tmp_path):
    spec = _coco(tmp_path, [{"category_id": 1, "segmentation": _square(0, 0, 6)}, {"category_id": 2}])
    read = read_segmentation(spec)
    assert "1 COCO annotations without a segmentation left out" in read.notes[0]
    assert read.train[0].labels.tolist() == [1]


def test_a_coco_rle_of_another_size_and_a_bad_polygon_are_refused_by_annotation(tmp_path):
    spec = _coco(tmp_path, [{"category_id": 1, "segmentation": rle(np.ones((16, 21), bool))}])
    assert "[16, 21]" in _one_line_error(spec, tmp_path / "instances.json", "annotation 1")
    spec = _coco(tmp_path, [{"category_id": 1, "segmentation": [[1, 2, 3, 4]]}])
    assert "neither polygons" in _one_line_error(spec, tmp_path / "instances.json", "annotation 1")


def _yolo(folder, lines):
    for part in ("images", "labels"):
        (folder / part / "train").mkdir(parents=True)
    Image.new("RGB", (20, 10)).save(folder / "images" / "train" / "a.png")
    Image.new("RGB", (20, 10)).save(folder / "images" / "train" / "b.png")  # no label file: background only
    (folder / "labels" / "train" / "a.txt").write_text("\n".join(lines) + "\n")
    (folder / "classes.txt").write_text("cat\ndog\n")
    return f"yolo:{folder}"


def test_yolo_polygons_are_normalised_and_class_0_is_index_1(tmp_path):
    read = read_segmentation(_yolo(tmp_path, ["1 0.1 0.2 0.4 0.2 0.4 0.8 0.1 0.8"]), seed=0)
    assert read.classes == ["background", "cat", "dog"]
    items = {item.path.name: item for item in read.train + read.test}
    want = np.zeros((10, 20), np.uint8)
    want[2:8, 2:8] = 2
    np.testing.assert_array_equal(items["a.png"].mask, want)
    assert items["a.png"].labels.tolist() == [2] and items["b.png"].mask.max() == 0
    assert items["b.png"].instances.shape == (0, 10, 20)


@pytest.mark.parametrize("line, words", [("0 0.5 0.5 0.2 0.2", "is a box"), ("2 0.1 0.1 0.5 0.1 0.5 0.5", "class id 2"),
                                         ("0 0.1 0.1 0.5", "4 fields")])
def test_a_bad_yolo_line_is_refused_by_file_and_line(tmp_path, line, words):
    spec = _yolo(tmp_path, [line])
    assert words in _one_line_error(spec, tmp_path / "labels" / "train" / "a.txt", "line 1")


def test_outline_traces_pixel_corners():
    region = np.zeros((5, 5), bool)
    region[1:3, 2:4] = True
    assert outline(region) == [4, 1, 4, 2, 4, 2, 4, 3, 2, 3, 2, 2, 2, 2, 2, 1]
