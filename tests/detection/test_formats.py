"""The COCO, YOLO and VOC readers: the same shapes in each format give the same targets; each format's layouts,
conventions and one-line errors."""
import json
import shutil

import numpy as np
import pytest
import yaml
from shapes_files import BY_HAND, assert_same_targets

from convlab.detection.formats import FORMATS, is_detection_spec, read_detection
from convlab.detection.synthetic import make_shapes
from convlab.detection.targets import box_counts
from convlab.errors import ConvlabError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes"), n_train=10, n_test=5, size=48, seed=3, negatives=0.3)


def test_the_shapes_have_negatives_and_boxes(shapes):
    assert any(len(item) == 0 for item in shapes.train + shapes.test)
    assert sum(box_counts(shapes.train, shapes.classes).values()) == sum(map(len, shapes.train)) > 5


@pytest.mark.parametrize("fmt", sorted(BY_HAND))
def test_files_written_by_hand_read_back_to_the_same_targets(shapes, tmp_path, fmt):
    BY_HAND[fmt](shapes, tmp_path)
    read = read_detection(f"{fmt}:{tmp_path}")
    assert_same_targets(read, shapes, atol=1e-4)
    assert read.issues == [] and read.box_issues == [] and read.notes == []
    assert read.split_names == {"train": "train", "test": "test"}


def test_every_format_is_tested_and_is_a_detection_spec():
    assert sorted(FORMATS) == sorted(BY_HAND)
    assert all(is_detection_spec(f"{name}:x") for name in FORMATS)
    assert not is_detection_spec("imagefolder:x") and not is_detection_spec("digits")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_writer_reads_back_to_the_same_targets(shapes, tmp_path, fmt):
    FORMATS[fmt].write(shapes, tmp_path)
    assert_same_targets(read_detection(f"{fmt}:{tmp_path}"), shapes)


def test_box_counts_count_per_class_name(shapes):
    counts = box_counts(shapes.train, shapes.classes)
    assert list(counts) == shapes.classes
    assert counts == {name: int(sum((item.labels == i).sum() for item in shapes.train))
                      for i, name in enumerate(shapes.classes)}
    assert box_counts([], ["a", "b"]) == {"a": 0, "b": 0}


# COCO


def _coco(folder, annotations, categories=({"id": 1, "name": "person"},), size=(40, 30), name="instances_train"):
    from PIL import Image
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(folder / "images" / "a.png")
    (folder / "annotations").mkdir(exist_ok=True)
    path = folder / "annotations" / f"{name}.json"
    path.write_text(json.dumps({"images": [{"id": 7, "file_name": "a.png", "width": size[0], "height": size[1]}],
                                "annotations": annotations, "categories": list(categories)}))
    return path


def test_coco_bbox_to_xyxy_iscrowd_area_and_category_order(tmp_path):
    path = _coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 9, "bbox": [2, 3, 10, 5], "area": 33.5,
                             "iscrowd": 1},
                            {"id": 2, "image_id": 7, "category_id": 4, "bbox": [0, 0, 4, 4], "iscrowd": 0}],
                 categories=[{"id": 9, "name": "zebra"}, {"id": 4, "name": "ant"}])
    data = read_detection(f"coco:{path}", test_fraction=0.5)
    assert data.classes == ["ant", "zebra"]  # in the order of the category ids
    (item,) = data.train + data.test
    np.testing.assert_array_equal(item.boxes, [[2, 3, 12, 8], [0, 0, 4, 4]])
    np.testing.assert_array_equal(item.labels, [1, 0])
    np.testing.assert_array_equal(item.iscrowd, [1, 0])
    np.testing.assert_array_equal(item.area, [33.5, 16])  # the file's area; the box's where there is none
    assert item.image_id == 7


def test_coco_unknown_category_id_is_refused_by_name(tmp_path):
    path = _coco(tmp_path, [{"id": 12, "image_id": 7, "category_id": 3, "bbox": [2, 3, 10, 5]}])
    with pytest.raises(ConvlabError, match=r"instances_train.json: annotation 12 has category_id 3") as err:
        read_detection(f"coco:{path}")
    assert "\n" not in str(err.value)


def test_coco_images_folder_given_or_missing(tmp_path):
    path = _coco(tmp_path / "data", [])
    elsewhere = tmp_path / "pictures"
    shutil.move(tmp_path / "data" / "images", elsewhere)
    with pytest.raises(ConvlabError, match=r"image a.png of .*instances_train.json not found in .*coco:.*,IMAGES_DIR"):
        read_detection(f"coco:{path}")
    data = read_detection(f"coco:{path},{elsewhere}")
    assert [item.path for item in data.train + data.test] == [elsewhere / "a.png"]


def test_coco_folder_with_train2017_and_val2017(shapes, tmp_path):
    BY_HAND["coco"](shapes, tmp_path)
    for old, new in (("train", "train2017"), ("test", "val2017")):
        (tmp_path / old).rename(tmp_path / new)
        (tmp_path / "annotations" / f"instances_{old}.json").rename(tmp_path / "annotations" / f"instances_{new}.json")
    data = read_detection(f"coco:{tmp_path}")
    assert data.split_names == {"train": "train2017", "test": "val2017"}
    assert_same_targets(data, shapes)


@pytest.mark.parametrize("text, problem", [("{not json", "is not valid JSON"),
                                           ('{"images": []}', "is not a COCO instances file: no 'annotations'")])
def test_coco_malformed_file_is_one_line_error(tmp_path, text, problem):
    path = tmp_path / "instances.json"
    path.write_text(text)
    with pytest.raises(ConvlabError, match=problem) as err:
        read_detection(f"coco:{path}")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_annotation_file_is_one_line_error(tmp_path):
    with pytest.raises(ConvlabError, match=r"coco:.*gone.json: .*gone.json not found; give coco:ANNOTATIONS.json"):
        read_detection(f"coco:{tmp_path / 'gone.json'}")
    with pytest.raises(ConvlabError, match=r"no annotations/instances_\*train\*.json"):
        read_detection(f"coco:{tmp_path}")


# YOLO


def _yolo_folder(shapes, folder):
    BY_HAND["yolo"](shapes, folder)
    return folder


def test_yolo_folder_names_as_dict_and_val_as_test(shapes, tmp_path):
    folder = _yolo_folder(shapes, tmp_path)
    (folder / "images" / "test").rename(folder / "images" / "val")
    (folder / "labels" / "test").rename(folder / "labels" / "val")
    (folder / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "val": "images/val",
                                                      "names": dict(enumerate(shapes.classes))}))
    data = read_detection(f"yolo:{folder / 'data.yaml'}")
    assert data.split_names == {"train": "train", "test": "val"}
    assert_same_targets(data, shapes)


def test_yolo_folder_with_classes_txt_and_without_names(shapes, tmp_path):
    folder = _yolo_folder(shapes, tmp_path)
    (folder / "data.yaml").unlink()
    with pytest.raises(ConvlabError, match=r"classes.txt not found; .* has no data.yaml: write the class names"):
        read_detection(f"yolo:{folder}")
    (folder / "classes.txt").write_text("\n".join(shapes.classes) + "\n")
    assert_same_targets(read_detection(f"yolo:{folder}"), shapes)


def test_yolo_test_key_wins_over_val_and_path_key(shapes, tmp_path):
    _yolo_folder(shapes, tmp_path / "set")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": "set", "train": "images/train", "val": "images/train",
                                                        "test": "images/test", "names": shapes.classes}))
    assert_same_targets(read_detection(f"yolo:{tmp_path / 'data.yaml'}"), shapes)


def test_yolo_class_id_out_of_range_names_file_and_line(shapes, tmp_path):
    folder = _yolo_folder(shapes, tmp_path)
    label = next((folder / "labels" / "train").glob("*.txt"))
    label.write_text(label.read_text() + "3 0.5 0.5 0.1 0.1\n")
    lines = len(label.read_text().splitlines())
    with pytest.raises(ConvlabError, match=rf"{label} line {lines}: class id 3 is not one of 0..2 \(3 names in "):
        read_detection(f"yolo:{folder}")


def test_yolo_segment_line_gives_its_box_and_image_without_label_is_negative(tmp_path):
    from PIL import Image
    for sub in ("images/train", "labels/train"):
        (tmp_path / sub).mkdir(parents=True)
    for name in ("a", "b"):
        Image.new("RGB", (100, 50)).save(tmp_path / "images" / "train" / f"{name}.jpg")
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.8\n")
    (tmp_path / "classes.txt").write_text("x\ny\n")
    data = read_detection(f"yolo:{tmp_path}", test_fraction=0.5)
    items = {item.path.stem: item for item in data.train + data.test}
    np.testing.assert_allclose(items["a"].boxes, [[10, 10, 50, 40]], atol=1e-4)
    assert items["a"].labels.tolist() == [1] and len(items["b"]) == 0


def test_yolo_malformed_yaml_and_label(shapes, tmp_path):
    folder = _yolo_folder(shapes, tmp_path)
    (folder / "data.yaml").write_text("train: [images/train\nnames: {")
    with pytest.raises(ConvlabError, match=r"data.yaml is not valid YAML"):
        read_detection(f"yolo:{folder}")
    (folder / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": shapes.classes}))
    label = next((folder / "labels" / "train").glob("*.txt"))
    label.write_text("0 0.5 0.5\n")
    with pytest.raises(ConvlabError, match=rf"{label} line 1: 3 fields; expected 'class cx cy w h'"):
        read_detection(f"yolo:{folder}")


# VOC


def test_voc_corners_difficult_and_sorted_names(tmp_path):
    from PIL import Image
    for sub in ("Annotations", "JPEGImages"):
        (tmp_path / sub).mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename>"
        "<object><name>dog</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax>"
        "<ymax>5</ymax></bndbox></object>"
        "<object><name>cat</name><bndbox><xmin>3</xmin><ymin>2</ymin><xmax>3</xmax><ymax>2</ymax></bndbox></object>"
        "</annotation>")
    data = read_detection(f"voc:{tmp_path}", test_fraction=0.5)
    assert data.classes == ["cat", "dog"]  # no labels.txt: the names found, sorted
    (item,) = data.train + data.test
    np.testing.assert_array_equal(item.boxes, [[0, 0, 10, 5], [2, 1, 3, 2]])  # a one-pixel box is 1 x 1
    assert item.labels.tolist() == [1, 0] and item.iscrowd.tolist() == [1, 0]


def test_voc_trainval_and_test_lists(shapes, tmp_path):
    BY_HAND["voc"](shapes, tmp_path)
    (tmp_path / "ImageSets" / "Main" / "train.txt").rename(tmp_path / "ImageSets" / "Main" / "trainval.txt")
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("train_0000\n")  # unused: test.txt is there
    data = read_detection(f"voc:{tmp_path}")
    assert data.split_names == {"train": "trainval", "test": "test"}
    assert_same_targets(data, shapes)


def test_voc_missing_or_malformed_xml_and_unknown_name(shapes, tmp_path):
    BY_HAND["voc"](shapes, tmp_path)
    first = tmp_path / "Annotations" / "train_0000.xml"
    first.write_text(first.read_text().replace("</annotation>", "<object><name>kite</name><bndbox><xmin>1</xmin>"
                                               "<ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
                                               "</annotation>"))
    with pytest.raises(ConvlabError, match=rf"{first}: object name 'kite' is not in labels.txt"):
        read_detection(f"voc:{tmp_path}")
    first.write_text("<annotation><object>")
    with pytest.raises(ConvlabError, match=rf"{first} is not valid XML"):
        read_detection(f"voc:{tmp_path}")
    first.unlink()
    with pytest.raises(ConvlabError, match=rf"VOC annotation file {first} not found; it is listed in"):
        read_detection(f"voc:{tmp_path}")


# one split


def test_one_split_is_split_by_image_with_the_seed(shapes, tmp_path):
    BY_HAND["yolo"](shapes, tmp_path)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": shapes.classes}))
    first, again, other = (read_detection(f"yolo:{tmp_path}", seed=seed, test_fraction=0.3) for seed in (0, 0, 1))
    assert (len(first.train), len(first.test)) == (7, 3)
    assert [i.path for i in first.test] == [i.path for i in again.test] != [i.path for i in other.test]
    assert sorted(i.path for i in first.train + first.test) == sorted(tmp_path / "images" / "train" / i.path.name
                                                                      for i in shapes.train)
    note = f"{tmp_path.name} has one split (train): 3 of 10 images held out as the test split, by image with seed 0"
    assert first.notes == [note]


def test_not_a_detection_spec_or_missing_path(tmp_path):
    with pytest.raises(ConvlabError, match=r"'digits' is not a detection dataset; give coco:"):
        read_detection("digits")
    with pytest.raises(ConvlabError, match=r"voc:.*nothing: .*nothing not found; give voc:DIR"):
        read_detection(f"voc:{tmp_path / 'nothing'}")


def test_a_trainval_file_alone_is_one_split_not_both(shapes, tmp_path):
    BY_HAND["coco"](shapes, tmp_path)
    (tmp_path / "annotations" / "instances_test.json").unlink()
    (tmp_path / "annotations" / "instances_train.json").rename(tmp_path / "annotations" / "instances_trainval.json")
    (tmp_path / "train").rename(tmp_path / "trainval")
    data = read_detection(f"coco:{tmp_path}", test_fraction=0.2)
    assert data.split_names == {"train": "trainval", "test": "test"}
    assert (len(data.train), len(data.test)) == (8, 2)
    assert not {item.path for item in data.train} & {item.path for item in data.test}


def test_yolo_path_key_relative_to_the_working_directory(shapes, tmp_path, monkeypatch):
    _yolo_folder(shapes, tmp_path / "datasets" / "set")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "data.yaml").write_text(yaml.safe_dump({"path": "datasets/set", "train": "images/train",
                                                                "test": "images/test", "names": shapes.classes}))
    monkeypatch.chdir(tmp_path)
    assert_same_targets(read_detection(f"yolo:{tmp_path / 'cfg' / 'data.yaml'}"), shapes)
