"""The Learn page's convolution: a JSON request checked field by field, answered with explain's trace."""
from __future__ import annotations

import math

import numpy as np

from ..scratch.explain import EXAMPLE_INPUT, EXAMPLE_KERNEL, MODE_LINE, parse_matrix, trace_conv

FIELDS = ("input", "kernel", "stride", "padding", "mode")
MAX_INPUT_SIDE = 16  # a page of numbers a person steps through, not a real image
MAX_KERNEL_SIDE = 7
MAX_STRIDE = 8
MAX_PADDING = 4


class FieldError(ValueError):
    """A request field that cannot be used; the message starts with the field's name."""


def conv_steps(body: object) -> dict:
    """{"input", "kernel" (text rows split by ';' or lists of rows), "stride", "padding", "mode"}, every
    field optional (the texts' worked example) -> every window with its products and sum.

    Raises FieldError naming the field.
    """
    if not isinstance(body, dict):
        raise FieldError(f"body: expected a JSON object with any of {', '.join(FIELDS)}, got {type(body).__name__}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise FieldError(f"{unknown[0]}: not a field; the fields are {', '.join(FIELDS)}")
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
