"""IoU and NMS step by step: the steps' values against torchvision.ops.box_iou and nms, edge cases included."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import batched_nms, box_iou, nms

from convlab.detection.explain import (EXAMPLE_BOXES, explain_iou, explain_nms, iou_steps, nms_steps, parse_box,
                                       parse_scored_boxes)


def library_iou(a, b) -> float:
    return float(box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0, 0])


def library_nms(boxes, scores, threshold) -> list[int]:
    return nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64),
               threshold).tolist()


@pytest.mark.parametrize("a, b", [
    ((10, 10, 50, 50), (30, 20, 70, 60)),  # the example: partial overlap
    ((0, 0, 10, 10), (2, 3, 7, 9)),  # b inside a
    ((0.5, 1.25, 7.75, 3.5), (3.1, 0.2, 9.9, 2.6)),  # fractions
    ((-20, -5, 5, 15), (0, 0, 30, 30)),  # negative corners
])
def test_iou_steps_equal_box_iou(a, b):
    s = iou_steps(a, b)
    assert s.iou == pytest.approx(library_iou(a, b), rel=1e-12)
    assert s.reference == library_iou(a, b)
    assert s.union == pytest.approx(s.area_a + s.area_b - s.intersection)


def test_the_example_step_by_step():
    s = iou_steps()
    assert (s.area_a, s.area_b) == (1600, 1600)
    assert s.corners == (30, 20, 50, 50)
    assert (s.width, s.height, s.intersection, s.union) == (20, 30, 600, 2600)
    assert s.iou == pytest.approx(600 / 2600)


@pytest.mark.parametrize("b", [(20, 20, 30, 30), (10, 0, 20, 10), (0, 10, 10, 20)], ids=["apart", "side", "below"])
def test_disjoint_and_touching_boxes_have_iou_0(b):
    s = iou_steps((0, 0, 10, 10), b)
    assert s.intersection == 0 and s.iou == 0 and s.reference == 0
    assert min(s.width, s.height) == 0  # clamped, never negative


def test_identical_boxes_have_iou_1():
    s = iou_steps((3, 4, 13, 24), (3, 4, 13, 24))
    assert s.iou == 1 and s.reference == 1
    assert s.intersection == s.union == 200


def test_the_nms_example_keeps_what_torchvision_keeps():
    boxes, scores, _ = parse_scored_boxes(EXAMPLE_BOXES)
    s = nms_steps()
    assert s.kept == s.reference == library_nms(boxes, scores, 0.5) == [0, 3, 5]
    assert s.order == [0, 3, 1, 4, 2, 5]
    first = s.rounds[0]
    assert first.best == 0
    assert {c.index: c.suppressed for c in first.compared} == {3: False, 1: True, 4: False, 2: True, 5: False}
    ious = box_iou(torch.tensor(boxes, dtype=torch.float64), torch.tensor(boxes, dtype=torch.float64))
    assert all(c.iou == float(ious[0, c.index]) for c in first.compared)


@pytest.mark.parametrize("threshold, kept", [(0.2, [0, 3]), (0.5, [0, 3, 5]), (0.6, [0, 3, 2, 5]),
                                             (0.8, [0, 3, 1, 4, 2, 5])])
def test_the_threshold_changes_what_is_kept(threshold, kept):
    boxes, scores, _ = parse_scored_boxes(EXAMPLE_BOXES)
    s = nms_steps(boxes, scores, threshold)
    assert s.kept == kept == library_nms(boxes, scores, threshold)


def test_a_box_at_exactly_the_threshold_stays():
    # IoU of these two is 50 / 150 = 1/3; torchvision suppresses only above the threshold
    boxes, scores = [(0, 0, 10, 10), (5, 0, 15, 10)], [0.9, 0.8]
    iou = library_iou(*boxes)
    assert nms_steps(boxes, scores, iou).kept == library_nms(boxes, scores, iou) == [0, 1]
    assert nms_steps(boxes, scores, iou - 1e-9).kept == library_nms(boxes, scores, iou - 1e-9) == [0]


@pytest.mark.parametrize("boxes, scores", [
    ([(0, 0, 10, 10)] * 3, [0.5, 0.5, 0.5]),  # identical boxes, equal scores: the first given is kept
    ([(0, 0, 10, 10), (20, 0, 30, 10), (0, 0, 10, 10), (20, 0, 30, 10)], [0.5] * 4),
    ([(0, 0, 10, 10), (1, 0, 11, 10), (2, 0, 12, 10), (40, 40, 50, 50)], [0.7, 0.9, 0.9, 0.7]),
], ids=["identical", "two-pairs", "mixed"])
def test_ties_in_scores_are_broken_as_torchvision_breaks_them(boxes, scores):
    s = nms_steps(boxes, scores, 0.5)
    assert s.kept == s.reference == library_nms(boxes, scores, 0.5)


def test_random_boxes_agree_with_torchvision():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        corners = torch.rand(12, 2, 2, generator=generator, dtype=torch.float64) * 100
        boxes = torch.cat([corners.min(1).values, corners.max(1).values + 1], dim=1)  # (12, 4) x1 y1 x2 y2
        scores = torch.randint(0, 5, (12,), generator=generator).double() / 4  # many ties
        s = nms_steps(boxes.tolist(), scores.tolist(), 0.3)
        assert s.kept == nms(boxes, scores, 0.3).tolist()
        pair = iou_steps(boxes[0].tolist(), boxes[1].tolist())
        assert pair.iou == pytest.approx(float(box_iou(boxes[:1], boxes[1:2])[0, 0]), abs=1e-12)


def test_every_box_is_kept_or_suppressed_once():
    s = nms_steps()
    suppressed = [c.index for r in s.rounds for c in r.compared if c.suppressed]
    assert sorted(s.kept + suppressed) == list(range(len(s.boxes)))


@pytest.mark.parametrize("text, message", [
    ("1 2 3", "expected 4 numbers (x1 y1 x2 y2), got 3"),
    ("1 2 3 x", "'x' is not a number"),
    ("5 0 5 10", "x2 > x1 and y2 > y1 are needed (got x1 5, x2 5, y1 0, y2 10)"),
    ("0 9 10 3", "x2 > x1 and y2 > y1 are needed"),
    ("0 0 inf 3", "finite"),
    ("0 0 2e9 3", "every corner must be a number from -1e+09 to 1e+09"),
    ("0 0 1e-200 1e-200", "the box is too small to measure"),
])
def test_a_bad_box_says_what_is_wrong(text, message):
    with pytest.raises(ValueError) as caught:
        parse_box(text)
    assert message in str(caught.value)


def test_a_bad_scored_box_is_named_by_its_index():
    with pytest.raises(ValueError) as caught:
        parse_scored_boxes("0 0 10 10 0.9; 0 0 10 10")
    assert str(caught.value).startswith("box 1 ('0 0 10 10'): expected 5 or 6 numbers")


def test_a_threshold_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="from 0 to 1"):
        nms_steps(threshold=1.5)
    with pytest.raises(ValueError, match="from 0 to 1"):
        nms_steps(threshold=float("nan"))


def test_the_texts_end_with_the_library_agreeing():
    assert explain_iou().splitlines()[-1] == "torchvision.ops.box_iou: 0.2308, the same"
    assert explain_nms().splitlines()[-2:] == ["kept: 0, 3, 5", "torchvision.ops.nms: 0, 3, 5, the same"]


# --- per class: a box is compared only with boxes of its own class (torchvision.ops.batched_nms) -----------

def library_batched_nms(boxes, scores, classes, threshold) -> list[int]:
    return batched_nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64),
                       torch.tensor(classes), threshold).tolist()


def test_boxes_of_another_class_are_never_compared():
    boxes, scores, classes = parse_scored_boxes("0 0 10 10 0.9 0; 1 1 11 11 0.8 1; 1 0 11 10 0.7 0")
    assert classes == [0, 1, 0]
    s = nms_steps(boxes, scores, 0.5, classes)
    assert s.kept == s.reference == library_batched_nms(boxes, scores, classes, 0.5) == [0, 1]
    assert [c.index for c in s.rounds[0].compared] == [2]  # box 1 overlaps box 0 but is of class 1
    assert nms_steps(boxes, scores, 0.5).kept == [0]  # without classes box 0 suppresses both


def test_random_boxes_with_classes_agree_with_batched_nms():
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        corners = torch.rand(12, 2, 2, generator=generator, dtype=torch.float64) * 60
        boxes = torch.cat([corners.min(1).values, corners.max(1).values + 1], dim=1)
        scores = torch.randint(0, 5, (12,), generator=generator).double() / 4
        classes = torch.randint(0, 3, (12,), generator=generator)
        s = nms_steps(boxes.tolist(), scores.tolist(), 0.3, classes.tolist())
        assert s.kept == batched_nms(boxes, scores, classes, 0.3).tolist()


@pytest.mark.parametrize("text, message", [
    ("0 0 10 10 0.9 0; 0 0 10 10 0.8", "box 0 has a class and box 1 has none: give every box a class, or none"),
    ("0 0 10 10 0.9 1.5", "box 0 ('0 0 10 10 0.9 1.5'): the class must be a whole number from 0 to 1,000,000, "
                          "got 1.5"),
    ("0 0 10 10 0.9 -1", "got -1"),
    ("0 0 10 10 0.9 1e20", "got 1e+20"),
    ("0 0 10 10 0.9 0 7", "expected 5 or 6 numbers"),
])
def test_bad_classes_say_what_is_wrong(text, message):
    with pytest.raises(ValueError) as caught:
        parse_scored_boxes(text)
    assert message in str(caught.value)


CORNER = st.floats(-1000, 1000, allow_nan=False)
SIDE = st.floats(0.01, 500, allow_nan=False)
BOX = st.tuples(CORNER, CORNER, SIDE, SIDE).map(lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))


@settings(max_examples=300, deadline=None)
@given(BOX, BOX)
def test_any_two_boxes_give_box_ious_value(a, b):
    s = iou_steps(a, b)
    assert s.iou == pytest.approx(s.reference, rel=1e-9, abs=1e-12)
    assert 0 <= s.iou <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(BOX, st.sampled_from([0.1, 0.5, 0.9]), st.integers(0, 2)), min_size=1, max_size=12),
       st.floats(0, 1), st.booleans())
def test_any_boxes_keep_what_torchvision_keeps(rows, threshold, per_class):
    boxes, scores, classes = (list(column) for column in zip(*rows))
    s = nms_steps(boxes, scores, threshold, classes if per_class else None)
    assert s.kept == s.reference
