"""How a decoder grows a map back, step by step: what `convlab explain upsample` prints and the Learn page steps.

A transposed convolution stamps each input value times the kernel into the output at stride offsets and adds
where the stamps overlap; bilinear upsampling weighs each output cell's four nearest input cells; nearest
upsampling copies. The steps are computed here for a person to follow, and each trace carries torch's answer
(F.conv_transpose2d, F.interpolate, in float64) beside its own so the text can show that they agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..scratch.explain import fmt, matrix_lines, parse_matrix

EXAMPLE_INPUT = "1 2; 3 4"
EXAMPLE_KERNEL = "1 1 1; 1 2 1; 1 1 1"
EXAMPLE_STRIDE = 2
MAX_OUTPUT_SIDE = 64  # cells a person reads on a screen; a larger map is no longer an explanation
CHECKERBOARD_SIDE = 3  # the constant input of the checkerboard maps is at least this large, so a cell has
# neighbours on every side that the border does not reach


def agrees(mine: np.ndarray, reference: np.ndarray) -> bool:
    """The steps' map equals torch's up to float64 rounding."""
    return mine.shape == reference.shape and bool(np.allclose(mine, reference, rtol=1e-9, atol=1e-12))


def _torch(matrix: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(matrix, dtype=np.float64))[None, None]  # (h, w) -> (1, 1, h, w)


def _check_stride(stride: int, what: str) -> None:
    if not (isinstance(stride, int) and stride >= 1):
        raise ValueError(f"the {what} must be a whole number >= 1, got {stride!r}")


def _check_side(rows: int, cols: int) -> None:
    if max(rows, cols) > MAX_OUTPUT_SIDE:
        raise ValueError(f"the output would be {rows}x{cols}, more than {MAX_OUTPUT_SIDE} a side to read; "
                         f"use a smaller input or stride")


# --- transposed convolution ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stamp:
    """One input cell's contribution: its value times the kernel, added into the output at stride offsets."""

    row: int  # the input cell
    col: int
    value: float
    top: int  # where the stamp's first row and column land in the full (uncropped) output: row * stride
    left: int
    stamp: np.ndarray  # (kh, kw) value * kernel
    after: np.ndarray  # the full output once this stamp and every earlier one are added
    covered: np.ndarray  # how many of the stamps so far cover each cell of the full output


@dataclass(frozen=True)
class TransposedSteps:
    """Everything `explain upsample --mode transposed` shows and the Learn page steps through, as numbers."""

    image: np.ndarray  # (h, w)
    kernel: np.ndarray  # (kh, kw)
    stride: int
    padding: int  # rows and columns cut from each side of the full output
    stamps: list[Stamp]  # row by row over the input
    full: np.ndarray  # ((h - 1) * stride + kh, (w - 1) * stride + kw): every stamp added
    output: np.ndarray  # the full output less `padding` on each side
    reference: np.ndarray  # F.conv_transpose2d of the same input and kernel: the map that counts

    def cell_terms(self, r: int, c: int) -> list[tuple[float, float]]:
        """(input value, kernel weight) of every stamp that covers output cell (r, c), in stamp order."""
        fr, fc = r + self.padding, c + self.padding  # the cell in the full output
        kh, kw = self.kernel.shape
        return [(s.value, float(self.kernel[fr - s.top, fc - s.left])) for s in self.stamps
                if s.top <= fr < s.top + kh and s.left <= fc < s.left + kw]


def transposed_steps(image: np.ndarray | None = None, kernel: np.ndarray | None = None,
                     stride: int = EXAMPLE_STRIDE, padding: int = 0) -> TransposedSteps:
    """Stamp each input value times the kernel into the output (default: the 2x2 example, a 3x3 kernel,
    stride 2), beside F.conv_transpose2d. Raises ValueError naming what does not fit."""
    image = parse_matrix(EXAMPLE_INPUT) if image is None else np.asarray(image, dtype=np.float64)
    kernel = parse_matrix(EXAMPLE_KERNEL) if kernel is None else np.asarray(kernel, dtype=np.float64)
    _check_stride(stride, "stride")
    if not (isinstance(padding, int) and padding >= 0):
        raise ValueError(f"the padding must be a whole number >= 0, got {padding!r}")
    (h, w), (kh, kw) = image.shape, kernel.shape
    full_h, full_w = (h - 1) * stride + kh, (w - 1) * stride + kw
    _check_side(full_h, full_w)
    if min(full_h, full_w) <= 2 * padding:
        raise ValueError(f"padding {padding} cuts {padding} rows and columns from each side of the "
                         f"{full_h}x{full_w} output, leaving nothing; use a padding below {min(full_h, full_w) / 2:g}")
    full, covered, stamps = np.zeros((full_h, full_w)), np.zeros((full_h, full_w), dtype=np.int64), []
    for i in range(h):
        for j in range(w):
            top, left = i * stride, j * stride
            with np.errstate(over="ignore", invalid="ignore"):  # numbers near float64's limit give inf, as in torch
                stamp = image[i, j] * kernel
                full[top:top + kh, left:left + kw] += stamp
            covered[top:top + kh, left:left + kw] += 1
            stamps.append(Stamp(i, j, float(image[i, j]), top, left, stamp, full.copy(), covered.copy()))
    output = full[padding:full_h - padding, padding:full_w - padding]
    reference = F.conv_transpose2d(_torch(image), _torch(kernel), stride=stride, padding=padding)[0, 0].numpy()
    return TransposedSteps(image, kernel, stride, padding, stamps, full, output, reference)


def overlap_counts(shape: tuple[int, int], kernel_shape: tuple[int, int], stride: int,
                   padding: int = 0) -> np.ndarray:
    """How many stamps cover each output cell: the transposed convolution of a constant input of ones with a
    kernel of ones. Raises ValueError as transposed_steps does."""
    return transposed_steps(np.ones(shape), np.ones(kernel_shape), stride, padding).output.astype(np.int64)


def is_even(kernel_shape: tuple[int, int], stride: int) -> bool:
    """Away from the border, every cell is covered by the same number of stamps exactly when the stride divides
    the kernel's size: then kh/stride stamps overlap along each column and kw/stride along each row."""
    return all(side % stride == 0 for side in kernel_shape)


def _even_kernel(kernel_shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """The kernel size rounded up to a multiple of the stride: the size that upsamples evenly."""
    return tuple(math.ceil(side / stride) * stride for side in kernel_shape)


def explain_transposed(image: np.ndarray | None = None, kernel: np.ndarray | None = None,
                       stride: int = EXAMPLE_STRIDE, padding: int = 0) -> str:
    """The text of `convlab explain upsample --mode transposed`."""
    s = transposed_steps(image, kernel, stride, padding)
    if not np.isfinite(s.full).all():
        raise ValueError("the stamps' sums overflow float64; use smaller numbers in the input and kernel")
    (h, w), (kh, kw), (oh, ow) = s.image.shape, s.kernel.shape, s.output.shape
    lines = ["transposed convolution: each input value times the kernel is stamped into the output, stamps "
             f"{stride} cells apart (the stride); where stamps overlap their numbers add up",
             f"input {h}x{w}:", *matrix_lines(s.image, "  "), f"kernel {kh}x{kw}:", *matrix_lines(s.kernel, "  "),
             f"output size: ({h} - 1)*{stride} + {kh} - 2*{padding} = {oh} rows, "
             f"({w} - 1)*{stride} + {kw} - 2*{padding} = {ow} columns"]
    for st in s.stamps:
        lines.append(f"input ({st.row},{st.col}) = {fmt(st.value)}: {fmt(st.value)} x kernel, added at rows "
                     f"{st.top}-{st.top + kh - 1}, columns {st.left}-{st.left + kw - 1}")
        lines += matrix_lines(st.stamp, "  ")
    if padding:
        lines += [f"all stamps added, {s.full.shape[0]}x{s.full.shape[1]}, before padding {padding} cuts "
                  f"{padding} row(s) and column(s) from each side:", *matrix_lines(s.full, "  ")]
    lines += ["where stamps overlap, the output cell is the sum of their numbers (input value x kernel weight):",
              *(_overlap_sums(s) or ["  (none overlap here: each cell holds one stamp's number, or 0 where no "
                                     "stamp reaches)"])]
    verdict = "the same" if agrees(s.output, s.reference) else \
        f"different (largest difference {fmt(np.abs(s.output - s.reference).max())})"
    lines += [f"output {oh}x{ow}:", *matrix_lines(s.output, "  "),
              f"torch.nn.functional.conv_transpose2d in float64: {verdict}"]
    return "\n".join(lines + _checkerboard_lines(s))


def _overlap_sums(s: TransposedSteps) -> list[str]:
    """'(r,c) = value*weight + ... = total' for every output cell that two or more stamps cover."""
    lines = []
    for r in range(s.output.shape[0]):
        for c in range(s.output.shape[1]):
            terms = s.cell_terms(r, c)
            if len(terms) > 1:
                products = " + ".join(f"{fmt(value)}*{fmt(weight)}" for value, weight in terms)
                lines.append(f"  ({r},{c}) = {products} = {fmt(s.output[r, c])}")
    return lines


def _checkerboard_lines(s: TransposedSteps) -> list[str]:
    """The overlap counts of this kernel size and stride on a constant input, and of a size that is even."""
    shape = tuple(max(CHECKERBOARD_SIDE, side) for side in s.image.shape)
    sizes = [s.kernel.shape] if is_even(s.kernel.shape, s.stride) else \
        [s.kernel.shape, _even_kernel(s.kernel.shape, s.stride)]
    lines = [f"checkerboard: on a constant {shape[0]}x{shape[1]} input, how many stamps cover each output cell "
             f"(stride {s.stride}, padding {s.padding})"]
    for kh, kw in sizes:
        try:
            counts = overlap_counts(shape, (kh, kw), s.stride, s.padding)
        except ValueError:  # a stride or padding that this input takes and the constant one does not
            lines.append(f"kernel {kh}x{kw}: no map at this stride and padding on a {shape[0]}x{shape[1]} input "
                         f"(larger than {MAX_OUTPUT_SIDE} a side, or cut away by the padding)")
            continue
        lines += [f"kernel {kh}x{kw}, {evenness((kh, kw), s.stride)}:", *matrix_lines(counts, "  ")]
    lines.append("bilinear upsampling (--mode bilinear) of a constant input is constant everywhere: no "
                 "checkerboard, which is why decoders often upsample bilinearly and then convolve")
    return lines


def evenness(kernel_shape: tuple[int, int], stride: int) -> str:
    """Whether stamps of this size at this stride cover the cells evenly, and why, in words."""
    if is_even(kernel_shape, stride):
        times = (kernel_shape[0] // stride) * (kernel_shape[1] // stride)
        return f"even: away from the border every cell is covered {times} time{'s' if times != 1 else ''}"
    if min(kernel_shape) < stride:
        return f"uneven: the kernel is smaller than the stride {stride}, so some cells get no stamp at all"
    return (f"uneven: the stride {stride} does not divide the kernel's size, so neighbouring cells get different "
            f"numbers of stamps, a checkerboard")


# --- bilinear and nearest -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where one output row (or column) reads from along its axis, as F.interpolate(align_corners=False)."""

    index: int  # the output row or column
    position: float  # (index + 0.5) / scale - 0.5: the output cell's centre in input coordinates
    clamped: float  # the position, or 0 where it falls before the first input cell
    low: int  # the input row or column at or before the position
    high: int  # the next one, or `low` again at the last
    weights: tuple[float, float]  # of low and high: 1 - (clamped - low) and clamped - low


@dataclass(frozen=True)
class InterpolateSteps:
    """Everything `explain upsample --mode bilinear|nearest` shows, as numbers."""

    mode: str
    image: np.ndarray  # (h, w)
    scale: int
    rows: list[Source]  # one per output row (bilinear; nearest copies and has none)
    cols: list[Source]
    output: np.ndarray  # (h * scale, w * scale)
    reference: np.ndarray  # F.interpolate of the same input: the map that counts


def _source(index: int, scale: int, size: int) -> Source:
    position = (index + 0.5) / scale - 0.5
    clamped = max(position, 0.0)
    low = min(int(clamped), size - 1)
    high = min(low + 1, size - 1)
    fraction = clamped - low
    return Source(index, position, clamped, low, high, (1.0 - fraction, fraction))


def bilinear_steps(image: np.ndarray | None = None, scale: int = EXAMPLE_STRIDE) -> InterpolateSteps:
    """Bilinear upsampling (align_corners=False) by a whole `scale`, each output row and column placed in the
    input (default: the 2x2 example, scale 2), beside F.interpolate."""
    image, (h, w) = _upsampled_input(image, scale)
    rows = [_source(r, scale, h) for r in range(h * scale)]
    cols = [_source(c, scale, w) for c in range(w * scale)]
    output = np.array([[sum(wy * wx * image[y, x] for y, wy in zip((ry.low, ry.high), ry.weights)
                            for x, wx in zip((cx.low, cx.high), cx.weights)) for cx in cols] for ry in rows])
    reference = F.interpolate(_torch(image), scale_factor=scale, mode="bilinear", align_corners=False)
    return InterpolateSteps("bilinear", image, scale, rows, cols, output, reference[0, 0].numpy())


def nearest_steps(image: np.ndarray | None = None, scale: int = EXAMPLE_STRIDE) -> InterpolateSteps:
    """Nearest upsampling by a whole `scale`: output (r, c) copies input (r // scale, c // scale), beside
    F.interpolate."""
    image, _ = _upsampled_input(image, scale)
    output = image.repeat(scale, axis=0).repeat(scale, axis=1)
    reference = F.interpolate(_torch(image), scale_factor=scale, mode="nearest")
    return InterpolateSteps("nearest", image, scale, [], [], output, reference[0, 0].numpy())


def _upsampled_input(image: np.ndarray | None, scale: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The input (default: the example) and its shape, once the scale and the output's size are checked."""
    image = parse_matrix(EXAMPLE_INPUT) if image is None else np.asarray(image, dtype=np.float64)
    _check_stride(scale, "scale (--stride)")
    _check_side(image.shape[0] * scale, image.shape[1] * scale)
    return image, image.shape


def _source_line(axis: str, s: Source, scale: int) -> str:
    where = f"({s.index} + 0.5)/{scale} - 0.5 = {fmt(s.position)}"
    if s.clamped != s.position:
        where += ", before the first cell: 0"
    if s.low == s.high:
        return f"  output {axis} {s.index}: {where} -> input {axis} {s.low} only (weight 1)"
    return (f"  output {axis} {s.index}: {where} -> input {axis}s {s.low} and {s.high}, weights "
            f"{fmt(s.weights[0])} and {fmt(s.weights[1])}")


def explain_bilinear(image: np.ndarray | None = None, scale: int = EXAMPLE_STRIDE) -> str:
    """The text of `convlab explain upsample --mode bilinear`."""
    s = bilinear_steps(image, scale)
    (h, w), (oh, ow) = s.image.shape, s.output.shape
    lines = [f"bilinear upsampling by {scale} (align_corners=False, as F.interpolate): each output cell's centre "
             f"is placed in the input, and the cell is the weighted mean of the four input cells around it; a "
             f"weight is larger the nearer the cell",
             f"input {h}x{w}:", *matrix_lines(s.image, "  "), f"output size: {h}*{scale} = {oh} rows, "
             f"{w}*{scale} = {ow} columns",
             "where each output row and column falls in the input:"]
    lines += [_source_line("row", r, scale) for r in s.rows] + [_source_line("column", c, scale) for c in s.cols]
    lines.append("each cell: its four neighbours (row, column) times row weight x column weight:")
    for ry in s.rows:
        for cx in s.cols:
            terms = [f"{fmt(wy * wx)}*{fmt(s.image[y, x])}" for y, wy in zip((ry.low, ry.high), ry.weights)
                     for x, wx in zip((cx.low, cx.high), cx.weights)]
            lines.append(f"  ({ry.index},{cx.index}) = {' + '.join(terms)} = {fmt(s.output[ry.index, cx.index])}")
    return "\n".join(lines + _result_lines(s, "interpolate(mode='bilinear', align_corners=False)"))


def explain_nearest(image: np.ndarray | None = None, scale: int = EXAMPLE_STRIDE) -> str:
    """The text of `convlab explain upsample --mode nearest`."""
    s = nearest_steps(image, scale)
    h, w = s.image.shape
    lines = [f"nearest upsampling by {scale}: each output cell (r, c) copies input cell (r // {scale}, c // {scale}), "
             f"so every input cell becomes a {scale}x{scale} block; nothing is computed and no weights are learned",
             f"input {h}x{w}:", *matrix_lines(s.image, "  ")]
    for i in range(h):
        for j in range(w):
            lines.append(f"  input ({i},{j}) = {fmt(s.image[i, j])} -> output rows {i * scale}-{(i + 1) * scale - 1}, "
                         f"columns {j * scale}-{(j + 1) * scale - 1}")
    return "\n".join(lines + _result_lines(s, "interpolate(mode='nearest')"))


def _result_lines(s: InterpolateSteps, library: str) -> list[str]:
    oh, ow = s.output.shape
    verdict = "the same" if agrees(s.output, s.reference) else \
        f"different (largest difference {fmt(np.abs(s.output - s.reference).max())})"
    return [f"output {oh}x{ow}:", *matrix_lines(s.output, "  "), f"torch.nn.functional.{library} in float64: {verdict}"]


# --- the modes, by name -------------------------------------------------------------------------------------

MODES = {  # mode -> its text, from (input, kernel, stride, padding)
    "transposed": explain_transposed,
    "bilinear": lambda image, kernel, stride, padding: explain_bilinear(image, stride),
    "nearest": lambda image, kernel, stride, padding: explain_nearest(image, stride),
}
WEIGHTED = {"transposed"}  # the modes that take --kernel and --padding


def explain_upsample(mode: str = "transposed", image: np.ndarray | None = None, kernel: np.ndarray | None = None,
                     stride: int = EXAMPLE_STRIDE, padding: int = 0) -> str:
    """The text of `convlab explain upsample`. Raises ValueError naming what does not fit."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    if any(m is not None and not np.isfinite(m).all() for m in (image, kernel)):
        raise ValueError("every number of the input and kernel must be finite")
    if mode not in WEIGHTED and (kernel is not None or padding):
        raise ValueError(f"{mode} upsampling has no kernel and no padding: give --kernel and --padding only with "
                         f"--mode transposed")
    return MODES[mode](image, kernel, stride, padding)
