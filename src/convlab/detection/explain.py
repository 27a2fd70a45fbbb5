"""IoU and non-maximum suppression step by step: what `convlab explain iou|nms` prints and the Learn page steps.

The steps are written out for a person to follow; the values that count come from torchvision (`box_iou`, `nms`),
and each trace carries the library's answer beside its own so the text can show that they agree.
Boxes are (x1, y1, x2, y2) pixel corners, x to the right and y down, as everywhere in convlab's detection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import count

import torch
from torchvision.ops import batched_nms, box_iou, nms

from ..scratch.explain import fmt

Box = tuple[float, float, float, float]

EXAMPLE_A = "10 10 50 50"
EXAMPLE_B = "30 20 70 60"
# Two people as a detector sees them: three boxes on the first (0, 1, 2), two on the second (3, 4), and a weak,
# badly placed box on the first (5) that overlaps the best box too little to be suppressed at IoU 0.5.
EXAMPLE_BOXES = ("12 14 62 94 0.92; 16 10 66 90 0.81; 2 24 54 100 0.64; "
                 "84 30 144 100 0.88; 92 38 150 106 0.7; 40 20 92 84 0.55")
EXAMPLE_IOU = 0.5
MAX_CORNER = 1e9  # pixels: every area, sum and quotient of the steps stays finite in float64
MAX_CLASS = 1_000_000  # more classes than any detector has; torch's int64 holds it


def parse_box(text: str) -> Box:
    """'x1 y1 x2 y2' (spaces or commas) -> a box. Raises ValueError saying what is wrong."""
    return check_box(_numbers(text, 4, "x1 y1 x2 y2"))


def parse_scored_boxes(text: str) -> tuple[list[Box], list[float], list[int] | None]:
    """'x1 y1 x2 y2 score [class]; ...' -> (boxes, scores, classes or None when no box has one).

    Raises ValueError naming the box (counted from 0)."""
    parts = [part for part in text.split(";") if part.strip()]
    if not parts:
        raise ValueError("no boxes; write one box per ';' as x1 y1 x2 y2 score")
    rows = []
    for index, part in enumerate(parts):
        try:
            rows.append(scored_box(_numbers(part, (5, 6), "x1 y1 x2 y2 score, then optionally a class")))
        except ValueError as err:
            raise ValueError(f"box {index} ({part.strip()!r}): {err}") from None
    return unzip_scored(rows)


def scored_box(values) -> tuple[Box, float, int | None]:
    """[x1, y1, x2, y2, score] or [..., score, class] -> (box, score, class or None); ValueError says why not."""
    box, score = check_box(values[:4]), float(values[4])
    if not math.isfinite(score):
        raise ValueError("the score must be a finite number")
    if len(values) == 5:
        return box, score, None
    label = values[5]
    if not (float(label).is_integer() and 0 <= label <= MAX_CLASS):
        raise ValueError(f"the class must be a whole number from 0 to {MAX_CLASS:,}, got {fmt(label)}")
    return box, score, int(label)


def unzip_scored(rows: list) -> tuple[list[Box], list[float], list[int] | None]:
    """(box, score, class) rows -> (boxes, scores, classes); classes None when no row has one.

    Raises ValueError when some rows have a class and others do not."""
    boxes, scores, classes = (list(column) for column in zip(*rows))
    labelled = [c is not None for c in classes]
    if not any(labelled):
        return boxes, scores, None
    if not all(labelled):
        classed, bare = labelled.index(True), labelled.index(False)
        raise ValueError(f"box {classed} has a class and box {bare} has none: give every box a class, or none")
    return boxes, scores, classes


def check_box(box) -> Box:
    """A box with a positive width and height, as a tuple of floats; else ValueError quoting the corners."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(abs(v) <= MAX_CORNER for v in (x1, y1, x2, y2)):  # NaN fails too
        raise ValueError(f"every corner must be a number from -{MAX_CORNER:g} to {MAX_CORNER:g}")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"x2 > x1 and y2 > y1 are needed (got x1 {fmt(x1)}, x2 {fmt(x2)}, y1 {fmt(y1)}, "
                         f"y2 {fmt(y2)}): give the top-left corner first, then the bottom-right")
    if (x2 - x1) * (y2 - y1) == 0:
        raise ValueError(f"the box is too small to measure: its area {fmt(x2 - x1)} x {fmt(y2 - y1)} rounds to 0")
    return x1, y1, x2, y2


def _numbers(text: str, counts: int | tuple[int, ...], names: str) -> list[float]:
    words = text.replace(",", " ").split()
    counts = (counts,) if isinstance(counts, int) else counts
    if len(words) not in counts:
        raise ValueError(f"expected {' or '.join(map(str, counts))} numbers ({names}), got {len(words)}")
    values = []
    for word in words:
        try:
            values.append(float(word))
        except ValueError:
            raise ValueError(f"{word!r} is not a number") from None
    if not all(math.isfinite(v) for v in values):
        raise ValueError("every number must be finite")
    return values


def _tensor(boxes) -> torch.Tensor:
    return torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)  # float64: the steps' own precision


# --- IoU ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IouSteps:
    """Everything `explain iou` shows, as numbers."""

    a: Box
    b: Box
    area_a: float  # (x2 - x1) * (y2 - y1)
    area_b: float
    corners: Box  # max of the lefts and tops, min of the rights and bottoms (inside out when the boxes miss)
    width: float  # corners' x2 - x1, clamped at 0
    height: float  # corners' y2 - y1, clamped at 0
    intersection: float  # width * height
    union: float  # area_a + area_b - intersection
    iou: float  # intersection / union, as the steps compute it
    reference: float  # torchvision.ops.box_iou of the same boxes: the value that counts


def iou_steps(a: Box | None = None, b: Box | None = None) -> IouSteps:
    """IoU of boxes a and b one operation at a time (default: a small example), beside torchvision's value."""
    a = parse_box(EXAMPLE_A) if a is None else check_box(a)
    b = parse_box(EXAMPLE_B) if b is None else check_box(b)
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    corners = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    width, height = max(0.0, corners[2] - corners[0]), max(0.0, corners[3] - corners[1])
    intersection = width * height
    union = area_a + area_b - intersection
    reference = float(box_iou(_tensor([a]), _tensor([b]))[0, 0])
    return IouSteps(a, b, area_a, area_b, corners, width, height, intersection, union, intersection / union,
                    reference)


def agrees(mine: float, reference: float) -> bool:
    """The steps' value equals the library's up to float64 rounding."""
    return math.isclose(mine, reference, rel_tol=1e-9, abs_tol=1e-12)


def explain_iou(a: Box | None = None, b: Box | None = None) -> str:
    """The text of `convlab explain iou`."""
    s = iou_steps(a, b)
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2), (ix1, iy1, ix2, iy2) = s.a, s.b, s.corners
    verdict = "the same" if agrees(s.iou, s.reference) else f"differs from the steps' {fmt(s.iou)}"
    lines = [
        "IoU (intersection over union) of two boxes x1 y1 x2 y2 (top-left and bottom-right corners, y down)",
        f"box a: {_corners(s.a)}   area = ({fmt(ax2)} - {fmt(ax1)}) x ({fmt(ay2)} - {fmt(ay1)}) = {fmt(s.area_a)}",
        f"box b: {_corners(s.b)}   area = ({fmt(bx2)} - {fmt(bx1)}) x ({fmt(by2)} - {fmt(by1)}) = {fmt(s.area_b)}",
        "intersection: the largest left and top, the smallest right and bottom",
        f"  x1 = max({fmt(ax1)}, {fmt(bx1)}) = {fmt(ix1)}   y1 = max({fmt(ay1)}, {fmt(by1)}) = {fmt(iy1)}",
        f"  x2 = min({fmt(ax2)}, {fmt(bx2)}) = {fmt(ix2)}   y2 = min({fmt(ay2)}, {fmt(by2)}) = {fmt(iy2)}",
        f"  width  = max(0, {fmt(ix2)} - {fmt(ix1)}) = {fmt(s.width)}",
        f"  height = max(0, {fmt(iy2)} - {fmt(iy1)}) = {fmt(s.height)}",
        f"  area = {fmt(s.width)} x {fmt(s.height)} = {fmt(s.intersection)}",
    ]
    if s.intersection == 0:
        lines.append("  (the boxes do not overlap: a width or height of 0 makes the intersection empty)")
    lines += [f"union = {fmt(s.area_a)} + {fmt(s.area_b)} - {fmt(s.intersection)} = {fmt(s.union)}",
              f"IoU = {fmt(s.intersection)} / {fmt(s.union)} = {fmt(s.iou)}",
              f"torchvision.ops.box_iou: {fmt(s.reference)}, {verdict}"]
    return "\n".join(lines)


def _corners(box: Box) -> str:
    return " ".join(fmt(v) for v in box)


# --- non-maximum suppression --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """One box still in play, held against the round's best box."""

    index: int
    iou: float  # torchvision.ops.box_iou with the best box
    suppressed: bool  # iou > threshold: taken for a second detection of the best box's object


@dataclass(frozen=True)
class NmsRound:
    """The best box still in play is kept; every other box in play is compared with it."""

    best: int
    compared: list[Comparison]  # in score order


@dataclass(frozen=True)
class NmsSteps:
    """Everything `explain nms` shows and the Learn page steps through, as numbers."""

    boxes: list[Box]
    scores: list[float]
    classes: list[int] | None  # None: one class; else NMS per class, as torchvision's detectors run it
    threshold: float
    order: list[int]  # box indices by score, highest first; equal scores keep the order given
    rounds: list[NmsRound]
    kept: list[int]  # the rounds' best boxes, in the order kept
    reference: list[int]  # torchvision.ops.nms (batched_nms with classes) of the same boxes: the answer that counts


def nms_steps(boxes: list[Box] | None = None, scores: list[float] | None = None, threshold: float = EXAMPLE_IOU,
              classes: list[int] | None = None) -> NmsSteps:
    """Greedy NMS one round at a time (default: the two-person example), beside torchvision's result.

    A box is suppressed when its IoU with a kept box is above `threshold`, as torchvision.ops.nms does; with
    `classes`, only a kept box of its own class can suppress it (torchvision.ops.batched_nms).
    """
    if boxes is None:
        boxes, scores, classes = parse_scored_boxes(EXAMPLE_BOXES)
    boxes = [check_box(box) for box in boxes]
    scores = [float(score) for score in scores]
    if len(scores) != len(boxes) or (classes is not None and len(classes) != len(boxes)):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores and {len(classes or [])} classes")
    if not 0 <= threshold <= 1:  # NaN fails too
        raise ValueError(f"the IoU threshold must be from 0 to 1 (a box whose IoU with a kept box is above it "
                         f"is suppressed), got {threshold}")
    tensor, score_tensor = _tensor(boxes), torch.tensor(scores, dtype=torch.float64)
    ious = box_iou(tensor, tensor).tolist()
    order = torch.sort(score_tensor, descending=True, stable=True).indices.tolist()
    group = [0] * len(boxes) if classes is None else list(classes)  # boxes of one group may suppress each other
    rounds, in_play = [], order
    while in_play:
        best, rest = in_play[0], in_play[1:]
        compared = [Comparison(j, ious[best][j], ious[best][j] > threshold) for j in rest if group[j] == group[best]]
        rounds.append(NmsRound(best, compared))
        suppressed = {c.index for c in compared if c.suppressed}
        in_play = [j for j in rest if j not in suppressed]
    if classes is None:
        reference = nms(tensor, score_tensor, threshold).tolist()
    else:
        reference = batched_nms(tensor, score_tensor, torch.tensor(group), threshold).tolist()
    return NmsSteps(boxes, scores, classes, threshold, order, rounds, [r.best for r in rounds], reference)


def explain_nms(boxes: list[Box] | None = None, scores: list[float] | None = None, threshold: float = EXAMPLE_IOU,
                classes: list[int] | None = None) -> str:
    """The text of `convlab explain nms`."""
    s = nms_steps(boxes, scores, threshold, classes)
    t = fmt(s.threshold)
    of_class = [""] * len(s.boxes) if s.classes is None else [f" of class {c}" for c in s.classes]
    scope = "every box" if s.classes is None else "every box of its class"
    lines = [(f"non-maximum suppression at IoU {t}: keep the best box, drop {scope} that overlaps it by more than "
              f"IoU {t} (a second detection of the same object), repeat with the boxes left"),
             "boxes (x1 y1 x2 y2, score):"]
    lines += [f"  box {i}: {_corners(box)}   score {fmt(score)}{of_class[i]}"
              for i, box, score in zip(count(), s.boxes, s.scores)]
    lines.append("sorted by score: " + ", ".join(f"{i} ({fmt(s.scores[i])})" for i in s.order))
    for number, r in enumerate(s.rounds, start=1):
        n = len(r.compared)
        left = f"{n} other box{'es' if n != 1 else ''}{of_class[r.best]} in play" if n else \
            f"no other box{of_class[r.best]} in play"
        lines.append(f"round {number}: keep box {r.best} (score {fmt(s.scores[r.best])}), the best left; {left}")
        for c in r.compared:
            why = f"> {t}, suppressed" if c.suppressed else f"<= {t}, stays"
            lines.append(f"  box {c.index}: IoU with box {r.best} = {fmt(c.iou)} {why}")
    library = "torchvision.ops.nms" if s.classes is None else "torchvision.ops.batched_nms"
    verdict = "the same" if s.kept == s.reference else "different"
    lines += [f"kept: {', '.join(map(str, s.kept))}",
              f"{library}: {', '.join(map(str, s.reference))}, {verdict}"]
    return "\n".join(lines)
