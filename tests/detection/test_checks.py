"""Boxes and images checked on load: degenerate boxes dropped and boxes over the edge clipped, each named
(file, image, index, problem); unreadable images skipped by name; never a NaN in what is kept."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from convlab.detection.checks import CLIP_TOLERANCE, Checker, check_boxes, describe
from convlab.detection.formats import read_detection
from convlab.errors import ConvlabError


@pytest.mark.parametrize("box, problem", [
    ([5, 5, 5, 9], "zero width"),
    ([5, 5, 9, 5], "zero height"),
    ([9, 5, 5, 9], "negative width"),
    ([5, 9, 9, 5], "negative height"),
    ([math.nan, 5, 9, 9], "not 4 finite numbers"),
    ([5, 5, math.inf, 9], "not 4 finite numbers"),
    ([-9, 2, 0, 8], "outside the 20 x 10 image"),
    ([21, 2, 30, 8], "outside the 20 x 10 image"),
    ([2, 10, 8, 12], "outside the 20 x 10 image"),
])
def test_degenerate_and_outside_boxes_are_dropped_by_name(box, problem):
    keep, boxes, problems = check_boxes([[1, 1, 4, 4], box], 20, 10)
    assert keep.tolist() == [True, False]
    assert len(problems) == 1 and problems[0][0] == 1 and problems[0][1].startswith(problem)
    assert np.isfinite(boxes[keep]).all()


def test_boxes_over_the_edge_are_clipped_and_named():
    keep, boxes, problems = check_boxes([[-3, 2, 8, 12], [15, -1, 25, 4]], 20, 10)
    assert keep.tolist() == [True, True]
    np.testing.assert_array_equal(boxes, [[0, 2, 8, 10], [15, 0, 20, 4]])
    assert problems == [(0, "clipped to the image"), (1, "clipped to the image")]


def test_rounding_overshoot_is_clipped_silently():
    keep, boxes, problems = check_boxes([[0, 0, 20 + CLIP_TOLERANCE / 2, 10]], 20, 10)
    assert keep.tolist() == [True] and problems == []
    np.testing.assert_array_equal(boxes, [[0, 0, 20, 10]])


def test_no_boxes():
    keep, boxes, problems = check_boxes(np.zeros((0, 4)), 20, 10)
    assert keep.shape == (0,) and boxes.shape == (0, 4) and problems == []


def test_checker_skips_a_corrupt_image_and_keeps_a_negative(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (20, 10)).save(good)
    bad.write_bytes(b"not a png at all")
    checker = Checker()
    assert checker.annotated(bad, [[1, 1, 4, 4]], [0], source=tmp_path / "labels.json") is None
    item = checker.annotated(good, np.zeros((0, 4)), [], source=tmp_path / "labels.json")
    assert (item.width, item.height, len(item)) == (20, 10, 0)
    assert checker.issues == [{"path": str(bad), "problem": "not an image format Pillow knows"}]
    assert describe(checker.issues[0]) == f"{bad}: skipped: not an image format Pillow knows"


def test_checker_names_the_dropped_box_and_keeps_the_others_aligned(tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (20, 10)).save(image)
    checker = Checker()
    item = checker.annotated(image, [[1, 1, 4, 4], [3, 3, 3, 8], [2, 2, 30, 6]], [0, 1, 2], source=tmp_path / "a.txt",
                             iscrowd=[0, 1, 1], area=[9, 0, 5])
    assert item.labels.tolist() == [0, 2] and item.iscrowd.tolist() == [0, 1] and item.area.tolist() == [9, 5]
    np.testing.assert_array_equal(item.boxes, [[1, 1, 4, 4], [2, 2, 20, 6]])
    assert [(issue["file"], issue["image"], issue["index"]) for issue in checker.box_issues] == [
        (str(tmp_path / "a.txt"), str(image), 1), (str(tmp_path / "a.txt"), str(image), 2)]
    assert checker.box_issues[0]["problem"] == "zero width: xyxy [3, 3, 3, 8]"
    assert describe(checker.box_issues[0]) == f"{tmp_path / 'a.txt'}: box 1 of {image}: zero width: xyxy [3, 3, 3, 8]"


def test_a_coco_file_with_bad_boxes_and_a_corrupt_image_reads_with_named_issues(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "empty.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    boxes = [[2, 3, 10, 5], [2, 3, 0, 5], ["nan", 1, 2, 3], [5, 5, -2, 4], [30, 20, 20, 20], [1, 2, 3], [4, 4, 4, 4]]
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box, "area": 4.0} for i, box in enumerate(boxes)]
    anns[2]["bbox"] = [math.nan, 1, 2, 3]
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "empty.png"}, {"id": 3, "file_name": "broken.png"}]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}))
    data = read_detection(f"coco:{path}", test_fraction=0.5)
    items = {item.path.name: item for item in data.train + data.test}
    assert sorted(items) == ["a.png", "empty.png"] and len(items["empty.png"]) == 0
    np.testing.assert_array_equal(items["a.png"].boxes, [[2, 3, 12, 8], [30, 20, 40, 30], [4, 4, 8, 8]])
    assert [(issue["index"], issue["problem"].split(":")[0]) for issue in data.box_issues] == [
        (1, "zero width"), (2, "not 4 finite numbers"), (3, "negative width"), (4, "clipped to the image"),
        (5, "not 4 finite numbers")]
    assert {issue["file"] for issue in data.box_issues} == {str(path)}
    assert [issue["path"] for issue in data.issues] == [str(tmp_path / "broken.png")]
    assert all(np.isfinite(item.boxes).all() and np.isfinite(item.area).all() for item in items.values())


def test_image_size_is_as_displayed_after_exif_rotation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees to display
    Image.new("RGB", (40, 20)).save(tmp_path / "turned.jpg", exif=exif)
    Image.new("RGB", (40, 20)).save(tmp_path / "plain.jpg")
    checker = Checker()
    assert checker.image_size(tmp_path / "turned.jpg") == (20, 40)
    assert checker.image_size(tmp_path / "plain.jpg") == (40, 20)


def test_no_readable_image_is_one_line_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [],
                                "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(ConvlabError, match=rf"coco:{path}: no readable image \({tmp_path / 'a.png'}: not an image"):
        read_detection(f"coco:{path}")
