"""`convlab explain iou` and `convlab explain nms`: the steps printed, the user's own boxes, one-line errors."""
from __future__ import annotations

import pytest
import torch
from cli_output import assert_one_line_error, run_cli
from torchvision.ops import box_iou, nms


def test_iou_prints_each_step_of_the_example(capsys):
    code, out, err = run_cli(capsys, "explain", "iou")
    assert code == 0 and err == ""
    lines = [line.strip() for line in out.splitlines()]
    assert "box a: 10 10 50 50   area = (50 - 10) x (50 - 10) = 1600" in lines
    assert "x1 = max(10, 30) = 30   y1 = max(10, 20) = 20" in lines
    assert "x2 = min(50, 70) = 50   y2 = min(50, 60) = 50" in lines
    assert "width  = max(0, 50 - 30) = 20" in lines
    assert "area = 20 x 30 = 600" in lines
    assert "union = 1600 + 1600 - 600 = 2600" in lines
    assert lines[-2:] == ["IoU = 600 / 2600 = 0.2308", "torchvision.ops.box_iou: 0.2308, the same"]


def test_iou_of_your_own_boxes_agrees_with_torchvision(capsys):
    a, b = [2.5, 0, 12, 8], [5, 3, 20, 9.5]
    code, out, _ = run_cli(capsys, "explain", "iou", "--a", "2.5 0 12 8", "--b", "5,3,20,9.5")
    expected = float(box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0, 0])
    assert code == 0
    assert out.splitlines()[-1] == f"torchvision.ops.box_iou: {expected:.4g}, the same"


def test_iou_of_boxes_that_miss_is_0(capsys):
    code, out, _ = run_cli(capsys, "explain", "iou", "--a", "0 0 10 10", "--b", "20 0 30 10")
    assert code == 0
    assert "width  = max(0, 10 - 20) = 0" in out
    assert "the boxes do not overlap" in out
    assert out.splitlines()[-2:] == ["IoU = 0 / 200 = 0", "torchvision.ops.box_iou: 0, the same"]


@pytest.mark.parametrize("args, fragments", [
    (["--a", "1 2 3"], ["--a '1 2 3'", "expected 4 numbers (x1 y1 x2 y2), got 3"]),
    (["--b", "0 0 10 10 5"], ["--b '0 0 10 10 5'", "expected 4 numbers"]),
    (["--a", "10 0 5 10"], ["--a '10 0 5 10'", "x2 > x1 and y2 > y1 are needed (got x1 10, x2 5"]),
    (["--b", "0 0 10 0"], ["--b '0 0 10 0'", "y2 0"]),
    (["--a", "0 0 ten 10"], ["--a", "'ten' is not a number"]),
])
def test_iou_refuses_a_bad_box_in_one_line(capsys, args, fragments):
    code, out, err = run_cli(capsys, "explain", "iou", *args)
    assert out == ""
    assert_one_line_error(code, err, "convlab explain: error: ", *fragments)


def test_nms_prints_each_round_and_the_kept_boxes(capsys):
    code, out, _ = run_cli(capsys, "explain", "nms")
    assert code == 0
    lines = out.splitlines()
    assert "sorted by score: 0 (0.92), 3 (0.88), 1 (0.81), 4 (0.7), 2 (0.64), 5 (0.55)" in lines
    assert lines.count("round 1: keep box 0 (score 0.92), the best left; 5 other boxes in play") == 1
    assert "  box 1: IoU with box 0 = 0.7762 > 0.5, suppressed" in lines
    assert "  box 5: IoU with box 0 = 0.2378 <= 0.5, stays" in lines
    assert "round 3: keep box 5 (score 0.55), the best left; no other box in play" in lines
    assert lines[-2:] == ["kept: 0, 3, 5", "torchvision.ops.nms: 0, 3, 5, the same"]


def test_nms_of_your_own_boxes_and_threshold_keeps_what_torchvision_keeps(capsys):
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40], [2, 0, 12, 10]]
    scores = [0.6, 0.9, 0.5, 0.6]
    text = "; ".join(" ".join(map(str, box + [score])) for box, score in zip(boxes, scores))
    code, out, _ = run_cli(capsys, "explain", "nms", "--boxes", text, "--iou", "0.6")
    kept = nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64), 0.6).tolist()
    assert code == 0
    assert out.splitlines()[-2] == f"kept: {', '.join(map(str, kept))}"
    assert out.splitlines()[-1].endswith(", the same")
    assert out.count("round ") == len(kept)


def test_a_lower_threshold_suppresses_more(capsys):
    _, out, _ = run_cli(capsys, "explain", "nms", "--iou", "0.2")
    assert "  box 5: IoU with box 0 = 0.2378 > 0.2, suppressed" in out.splitlines()
    assert out.splitlines()[-2] == "kept: 0, 3"


@pytest.mark.parametrize("args, fragments", [
    (["--boxes", "0 0 10 10 0.9; 0 0 10 10"], ["--boxes '0 0 10 10 0.9; 0 0 10 10'", "box 1 ('0 0 10 10'): expected "
                                               "5 or 6 numbers (x1 y1 x2 y2 score, then optionally a class), got 4"]),
    (["--boxes", "0 0 10 10 high"], ["--boxes", "'high' is not a number"]),
    (["--boxes", "5 5 1 1 0.5"], ["--boxes", "box 0", "x2 > x1 and y2 > y1 are needed"]),
    (["--boxes", " ; "], ["--boxes", "no boxes"]),
    (["--iou", "1.5"], ["--iou", "from 0 to 1", "got 1.5"]),
    (["--iou", "-0.1"], ["--iou", "got -0.1"]),
])
def test_nms_refuses_bad_input_in_one_line(capsys, args, fragments):
    code, out, err = run_cli(capsys, "explain", "nms", *args)
    assert out == ""
    assert_one_line_error(code, err, *fragments)


def test_nms_with_classes_compares_boxes_of_one_class(capsys):
    code, out, _ = run_cli(capsys, "explain", "nms", "--boxes", "0 0 10 10 0.9 0; 1 1 11 11 0.8 1; 1 0 11 10 0.7 0")
    assert code == 0
    lines = out.splitlines()
    assert "drop every box of its class that overlaps it" in lines[0]
    assert "  box 1: 1 1 11 11   score 0.8 of class 1" in lines
    assert "round 1: keep box 0 (score 0.9), the best left; 1 other box of class 0 in play" in lines
    assert "  box 1: IoU with box 0" not in out  # another class: never compared
    assert lines[-2:] == ["kept: 0, 1", "torchvision.ops.batched_nms: 0, 1, the same"]


def test_nms_refuses_boxes_with_and_without_a_class(capsys):
    code, _, err = run_cli(capsys, "explain", "nms", "--boxes", "0 0 10 10 0.9 0; 1 1 11 11 0.8")
    assert_one_line_error(code, err, "--boxes", "box 0 has a class and box 1 has none")
