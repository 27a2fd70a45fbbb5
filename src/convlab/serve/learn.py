"""The Learn page's convolution, NMS and upsampling: JSON requests checked field by field, answered with explain's
traces."""
from __future__ import annotations

import math

import numpy as np

from ..detection.explain import EXAMPLE_BOXES, EXAMPLE_IOU, nms_steps, parse_scored_boxes, scored_box, unzip_scored
from ..scratch.explain import EXAMPLE_INPUT, EXAMPLE_KERNEL, MODE_LINE, parse_matrix, trace_conv
from ..segmentation import explain as upsample_explain

FIELDS = ("input", "kernel", "stride", "padding", "mode")
MAX_INPUT_SIDE = 16  # a page of numbers a person steps through, not a real image
MAX_KERNEL_SIDE = 7
MAX_STRIDE = 8
MAX_PADDING = 4
NMS_FIELDS = ("boxes", "iou")
MAX_BOXES = 20  # boxes a person tells apart in one picture
UPSAMPLE_FIELDS = ("input", "kernel", "stride", "padding")
MAX_UPSAMPLE_INPUT_SIDE = 6  # stamps a person steps through one by one
MAX_UPSAMPLE_KERNEL_SIDE = 5
MAX_UPSAMPLE_STRIDE = 4


class FieldError(ValueError):
    """A request field that cannot be used; the message starts with the field's name."""


def conv_steps(body: object) -> dict:
    """{"input", "kernel" (text rows split by ';' or lists of rows), "stride", "padding", "mode"}, every
    field optional (the texts' worked example) -> every window with its products and sum.

    Raises FieldError naming the field.
    """
    _check_fields(body, FIELDS)
    image = _matrix(body, "input", EXAMPLE_INPUT, MAX_INPUT_SIDE)
    kernel = _matrix(body, "kernel", EXAMPLE_KERNEL, MAX_KERNEL_SIDE)
    stride = _integer(body, "stride", 1, 1, MAX_STRIDE)
    padding = _integer(body, "padding", 0, 0, MAX_PADDING)
    mode = body.get("mode", "correlation")
    if not isinstance(mode, str) or mode not in MODE_LINE:
        raise FieldError(f"mode: must be one of {', '.join(MODE_LINE)}, got {repr(mode)[:40]}")
    try:
        trace = trace_conv(image, kernel, stride, padding, mode)
    except ValueError as err:  # the kernel does not fit the padded input
        raise FieldError(f"kernel: {err}") from None
    return {
        "mode": mode, "mode_line": MODE_LINE[mode], "stride": stride, "padding": padding,
        "input": trace.image.tolist(), "kernel": trace.kernel.tolist(), "slid": trace.slid.tolist(),
        "padded": trace.padded.tolist(), "output": trace.output.tolist(),
        "windows": [{"row": w.row, "col": w.col, "top": w.top, "left": w.left, "window": w.window.tolist(),
                     "products": w.products.tolist(), "sum": w.total} for w in trace.windows],
    }


def nms_rounds(body: object) -> dict:
    """{"boxes" (text "x1 y1 x2 y2 score [class]; ..." or a list of [x1, y1, x2, y2, score(, class)]), "iou"},
    every field optional (the two-person example at IoU 0.5) -> each round of NMS and the kept boxes, beside
    torchvision's (ops.nms, or ops.batched_nms when the boxes have classes).

    Raises FieldError naming the field.
    """
    _check_fields(body, NMS_FIELDS)
    boxes, scores, classes = _scored_boxes(body.get("boxes", EXAMPLE_BOXES))
    threshold = body.get("iou", EXAMPLE_IOU)
    if not _is_number(threshold) or not 0 <= threshold <= 1:
        raise FieldError(f"iou: must be a number from 0 to 1, got {repr(threshold)[:20]}")
    s = nms_steps(boxes, scores, threshold, classes)
    return {
        "iou": s.threshold, "boxes": [list(box) for box in s.boxes], "scores": s.scores, "classes": s.classes,
        "order": s.order,
        "rounds": [{"best": r.best, "compared": [{"index": c.index, "iou": c.iou, "suppressed": c.suppressed}
                                                 for c in r.compared]} for r in s.rounds],
        "kept": s.kept, "reference": s.reference,
    }


def upsample_stamps(body: object) -> dict:
    """{"input", "kernel" (text rows split by ';' or lists of rows), "stride", "padding"}, every field optional
    (the 2x2 example, a 3x3 kernel, stride 2) -> each input cell's stamp with the output and the overlap counts
    once it is added, the output beside F.conv_transpose2d's, and whether the stamps cover the cells evenly.

    Raises FieldError naming the field.
    """
    _check_fields(body, UPSAMPLE_FIELDS)
    image = _matrix(body, "input", upsample_explain.EXAMPLE_INPUT, MAX_UPSAMPLE_INPUT_SIDE)
    kernel = _matrix(body, "kernel", upsample_explain.EXAMPLE_KERNEL, MAX_UPSAMPLE_KERNEL_SIDE)
    stride = _integer(body, "stride", upsample_explain.EXAMPLE_STRIDE, 1, MAX_UPSAMPLE_STRIDE)
    padding = _integer(body, "padding", 0, 0, MAX_PADDING)
    try:
        s = upsample_explain.transposed_steps(image, kernel, stride, padding)
    except ValueError as err:  # the padding cuts the whole output away
        raise FieldError(f"padding: {err}") from None
    if not np.isfinite(s.full).all():
        raise FieldError("input: the stamps' sums overflow float64; use smaller numbers in the input and kernel")
    return {
        "input": s.image.tolist(), "kernel": s.kernel.tolist(), "stride": stride, "padding": padding,
        "stamps": [{"row": t.row, "col": t.col, "value": t.value, "top": t.top, "left": t.left,
                    "stamp": t.stamp.tolist(), "after": t.after.tolist(), "covered": t.covered.tolist()}
                   for t in s.stamps],
        "output": s.output.tolist(), "reference": s.reference.tolist(),
        "same": upsample_explain.agrees(s.output, s.reference),
        "even": upsample_explain.is_even(s.kernel.shape, stride),
        "evenness": upsample_explain.evenness(s.kernel.shape, stride),
    }


def _check_fields(body: object, fields: tuple[str, ...]) -> None:
    if not isinstance(body, dict):
        raise FieldError(f"body: expected a JSON object with any of {', '.join(fields)}, got {type(body).__name__}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise FieldError(f"{unknown[0]}: not a field; the fields are {', '.join(fields)}")


def _scored_boxes(value: object) -> tuple[list, list[float], list[int] | None]:
    """The "boxes" field as (boxes, scores, classes or None); FieldError says which box is wrong."""
    try:
        if isinstance(value, str):
            boxes, scores, classes = parse_scored_boxes(value)
        elif isinstance(value, list) and value:
            boxes, scores, classes = unzip_scored([_scored_row(index, row) for index, row in enumerate(value)])
        else:
            raise ValueError("expected text \"x1 y1 x2 y2 score; ...\" or a list of [x1, y1, x2, y2, score]")
    except ValueError as err:
        raise FieldError(f"boxes: {err}") from None
    if len(boxes) > MAX_BOXES:
        raise FieldError(f"boxes: at most {MAX_BOXES} here, got {len(boxes)}; use `convlab explain nms` for more")
    return boxes, scores, classes


def _scored_row(index: int, row: object):
    """One row of the "boxes" list: [x1, y1, x2, y2, score] or with a class after the score."""
    if not (isinstance(row, list) and len(row) in (5, 6) and all(_is_number(v) for v in row)):
        raise ValueError(f"box {index} ({str(row)[:40]}): expected 5 numbers [x1, y1, x2, y2, score], or 6 "
                         f"with a class")
    try:
        return scored_box(row)
    except ValueError as err:
        raise ValueError(f"box {index}: {err}") from None


def _matrix(body: dict, field: str, default: str, max_side: int) -> np.ndarray:
    value = body.get(field, default)
    if isinstance(value, str):
        try:
            matrix = parse_matrix(value)
        except ValueError as err:
            raise FieldError(f"{field}: {err}; write rows separated by ';' and numbers by spaces, "
                             f"e.g. \"1 0 1; 0 1 0\"") from None
    elif isinstance(value, list) and value and all(isinstance(row, list) and row for row in value):
        if any(len(row) != len(value[0]) for row in value):
            raise FieldError(f"{field}: rows have different lengths ({', '.join(str(len(r)) for r in value)} numbers)")
        if not all(_is_number(v) for row in value for v in row):
            bad = next(v for row in value for v in row if not _is_number(v))
            raise FieldError(f"{field}: {str(bad)[:20]!r} is not a number")
        matrix = np.array(value, dtype=np.float64)
    else:
        raise FieldError(f"{field}: expected rows as text (\"1 0; 0 1\") or a list of lists of numbers")
    if not np.isfinite(matrix).all():
        raise FieldError(f"{field}: every number must be finite")
    if max(matrix.shape) > max_side:
        raise FieldError(f"{field}: at most {max_side}x{max_side} numbers here, got "
                         f"{matrix.shape[0]}x{matrix.shape[1]}; use `convlab explain conv` for larger ones")
    return matrix


def _integer(body: dict, field: str, default: int, low: int, high: int) -> int:
    value = body.get(field, default)
    if not (isinstance(value, int) and not isinstance(value, bool)) or not low <= value <= high:
        raise FieldError(f"{field}: must be a whole number from {low} to {high}, got {repr(value)[:20]}")
    return value


def _is_number(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float's range
        return False
