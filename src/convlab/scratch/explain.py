"""Step-by-step traces of convolution, pooling, a linear layer, a residual block and backpropagation.

Each `explain_*` function returns the trace as text (the `convlab explain` command prints it); the
numbers come from the engine's own functions, so the trace shows what the engine computes.
Matrices print one row per line, numbers separated by spaces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import functional as F

# The texts' worked example: a 5x5 binary image and a 3x3 "X" kernel.
EXAMPLE_INPUT = "1 1 1 0 0; 0 1 1 1 0; 0 0 1 1 1; 0 0 1 1 0; 0 1 1 0 0"
EXAMPLE_KERNEL = "1 0 1; 0 1 0; 1 0 1"
POOL_INPUT = "1 3 2 4; 5 6 1 2; 7 2 8 1; 3 4 0 9"

MODE_LINE = {
    "correlation": "cross-correlation (what deep-learning frameworks compute): the kernel slides over the input "
                   "as it is; true convolution first turns the kernel 180 degrees.",
    "convolution": "true convolution: the kernel is turned 180 degrees, then slid over the input; frameworks "
                   "compute cross-correlation (no turn), which only learns the turned kernel instead.",
}


def parse_matrix(text: str) -> np.ndarray:
    """'1 2 3; 4 5 6' (rows split by ';', numbers by spaces or commas) -> a 2-D float array.

    Raises ValueError saying what is wrong (empty, not a number, rows of different lengths).
    """
    rows = [row.replace(",", " ").split() for row in text.strip().strip("[]").split(";")]
    if not any(rows):
        raise ValueError("the matrix is empty")
    for index, row in enumerate(rows, start=1):
        if not row:
            raise ValueError(f"row {index} is empty")
    if any(len(row) != len(rows[0]) for row in rows):
        lengths = ", ".join(str(len(row)) for row in rows)
        raise ValueError(f"rows have different lengths ({lengths} numbers)")
    try:
        return np.array([[float(v) for v in row] for row in rows])
    except ValueError:
        bad = next(v for row in rows for v in row if not _is_number(v))
        raise ValueError(f"{bad!r} is not a number") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def fmt(value: float) -> str:
    """A number as short as it can be: 4, -0.5, 0.6225."""
    value = float(value)
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def matrix_lines(m: np.ndarray, indent: str = "") -> list[str]:
    """One row per line, numbers separated by spaces (right-aligned when widths differ)."""
    cells = [[fmt(v) for v in row] for row in np.atleast_2d(m)]
    width = max(len(c) for row in cells for c in row)
    return [indent + " ".join(c.rjust(width) for c in row) for row in cells]


def _side_by_side(blocks: list[list[str]], joiners: list[str]) -> list[str]:
    """Print equal-height blocks next to each other with a joiner (e.g. '*', '=') on the middle row."""
    height = len(blocks[0])
    widths = [max(len(line) for line in block) for block in blocks]
    out = []
    for r in range(height):
        parts = []
        for b, block in enumerate(blocks):
            parts.append(block[r].ljust(widths[b]))
            if b < len(joiners):
                parts.append(f" {joiners[b]} " if r == height // 2 else " " * (len(joiners[b]) + 2))
        out.append("  " + "".join(parts).rstrip())
    return out


@dataclass
class ConvWindow:
    """One output cell: where its window sits in the (padded) input, the products and their sum."""

    row: int
    col: int
    top: int  # first row of the window in the padded input
    left: int  # first column
    window: np.ndarray  # (kh, kw) the part of the padded input under the kernel
    products: np.ndarray  # (kh, kw) window * the kernel that slides
    total: float  # the engine's output at (row, col): the sum of the products


@dataclass
class ConvTrace:
    """Everything `explain conv` shows, as numbers: what the text prints and the web app steps through."""

    image: np.ndarray  # (h, w)
    kernel: np.ndarray  # (kh, kw) as given
    slid: np.ndarray  # the kernel that slides: as given, or turned 180 degrees for true convolution
    padded: np.ndarray  # (h + 2p, w + 2p)
    stride: int
    padding: int
    mode: str
    output: np.ndarray  # (ho, wo) from the engine's conv2d_forward
    windows: list[ConvWindow]  # row by row


def trace_conv(image: np.ndarray | None = None, kernel: np.ndarray | None = None, stride: int = 1,
               padding: int = 0, mode: str = "correlation") -> ConvTrace:
    """Every window of a 2-D convolution with its products; the sums are the engine's own output.

    Without image/kernel: the texts' worked example. Raises ValueError naming what does not fit.
    """
    image = parse_matrix(EXAMPLE_INPUT) if image is None else np.asarray(image, dtype=np.float64)
    kernel = parse_matrix(EXAMPLE_KERNEL) if kernel is None else np.asarray(kernel, dtype=np.float64)
    if mode not in MODE_LINE:
        raise ValueError(f"mode must be one of {', '.join(MODE_LINE)} (got {mode!r})")
    if stride < 1 or padding < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0 (got stride {stride}, padding {padding})")
    (h, w), (kh, kw) = image.shape, kernel.shape
    if h + 2 * padding < kh or w + 2 * padding < kw:
        raise ValueError(f"the {kh}x{kw} kernel is larger than the {h + 2 * padding}x{w + 2 * padding} "
                         f"(padded) input")
    slid = kernel[::-1, ::-1] if mode == "convolution" else kernel
    padded = np.pad(image, padding)
    out, _ = F.conv2d_forward(image[None, None], slid[None, None], stride=stride, padding=padding)
    out = out[0, 0]  # (1, 1, ho, wo) -> (ho, wo)
    windows = []
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            top, left = i * stride, j * stride
            window = padded[top : top + kh, left : left + kw]
            windows.append(ConvWindow(i, j, top, left, window, window * slid, float(out[i, j])))
    return ConvTrace(image, kernel, slid, padded, stride, padding, mode, out, windows)


def explain_conv(image: np.ndarray | None = None, kernel: np.ndarray | None = None, stride: int = 1,
                 padding: int = 0, mode: str = "correlation") -> str:
    """Every window, its element-wise products and their sum, then the output matrix."""
    t = trace_conv(image, kernel, stride, padding, mode)
    (h, w), (kh, kw), (ho, wo) = t.image.shape, t.kernel.shape, t.output.shape
    lines = [MODE_LINE[mode], f"input {h}x{w}:", *matrix_lines(t.image, "  "), f"kernel {kh}x{kw}:",
             *matrix_lines(t.kernel, "  ")]
    if mode == "convolution":
        lines += ["kernel turned 180 degrees (what slides):", *matrix_lines(t.slid, "  ")]
    if padding:
        lines += [f"input with {padding} ring(s) of zero padding, {t.padded.shape[0]}x{t.padded.shape[1]}:",
                  *matrix_lines(t.padded, "  ")]
    lines.append(f"output size: ({h} + 2*{padding} - {kh}) // {stride} + 1 = {ho} rows, "
                 f"({w} + 2*{padding} - {kw}) // {stride} + 1 = {wo} columns")
    for win in t.windows:
        lines.append(f"window ({win.row},{win.col}): rows {win.top}-{win.top + kh - 1}, columns "
                     f"{win.left}-{win.left + kw - 1} of the {'padded ' if padding else ''}input")
        lines += _side_by_side([matrix_lines(win.window), matrix_lines(t.slid), matrix_lines(win.products)],
                               ["*", "="])
        lines.append(f"  sum = {' + '.join(fmt(v) for v in win.products.ravel())} = {fmt(win.total)}")
    lines += [f"output {ho}x{wo}:", *matrix_lines(t.output)]
    return "\n".join(lines)


def explain_pool(image: np.ndarray | None = None, size: int = 2, stride: int | None = None) -> str:
    """Max and average pooling of each window, then both outputs."""
    image = parse_matrix(POOL_INPUT) if image is None else np.asarray(image, dtype=np.float64)
    stride = stride or size
    h, w = image.shape
    if h < size or w < size or size < 1 or stride < 1:
        raise ValueError(f"a {size}x{size} window with stride {stride} does not fit the {h}x{w} input")
    x = image[None, None]
    max_out = F.max_pool2d_forward(x, size, stride)[0][0, 0]
    avg_out = F.avg_pool2d_forward(x, size, stride)[0][0, 0]
    lines = [f"{size}x{size} pooling with stride {stride}: each window gives one number, its maximum "
             f"(max pooling) or its mean (average pooling); no weights are learned.",
             f"input {h}x{w}:", *matrix_lines(image, "  ")]
    for i in range(max_out.shape[0]):
        for j in range(max_out.shape[1]):
            window = image[i * stride : i * stride + size, j * stride : j * stride + size]
            values = " ".join(fmt(v) for v in window.ravel())
            lines.append(f"window ({i},{j}): {values}  ->  max {fmt(max_out[i, j])}, "
                         f"mean {fmt(window.sum())}/{size * size} = {fmt(avg_out[i, j])}")
    lines += [f"max pooling output {max_out.shape[0]}x{max_out.shape[1]}:", *matrix_lines(max_out),
              f"average pooling output {avg_out.shape[0]}x{avg_out.shape[1]}:", *matrix_lines(avg_out)]
    return "\n".join(lines)


def explain_linear(x: np.ndarray | None = None, weight: np.ndarray | None = None,
                   bias: np.ndarray | None = None) -> str:
    """y = W x + b, one output at a time."""
    x = np.array([1.0, 2.0, 3.0]) if x is None else np.asarray(x, dtype=np.float64).ravel()
    weight = np.array([[0.5, -1.0, 0.25], [1.0, 0.0, -0.5]]) if weight is None else np.atleast_2d(weight)
    bias = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64).ravel()
    if weight.shape[1] != x.size or bias.size != weight.shape[0]:
        raise ValueError(f"shapes do not fit: x has {x.size} numbers, the weight is "
                         f"{weight.shape[0]}x{weight.shape[1]}, the bias has {bias.size}")
    out, _ = F.linear_forward(x[None], weight, bias)
    lines = ["fully connected: every output is a weighted sum of every input plus a bias, y = W x + b "
             f"({weight.shape[0]}x{weight.shape[1]} weights, {bias.size} biases)",
             "x:", *matrix_lines(x[None], "  "), "W:", *matrix_lines(weight, "  "), "b:", *matrix_lines(bias[None], "  ")]
    for k in range(weight.shape[0]):
        terms = " + ".join(f"{fmt(weight[k, i])}*{fmt(x[i])}" for i in range(x.size))
        lines.append(f"y[{k}] = {terms} + {fmt(bias[k])} = {fmt(out[0, k])}")
    lines += ["y:", *matrix_lines(out)]
    return "\n".join(lines)


def explain_residual(image: np.ndarray | None = None, kernel: np.ndarray | None = None) -> str:
    """y = relu(F(x) + x) with F a 'same' 3x3 convolution, and why the shortcut helps the gradient."""
    image = parse_matrix("1 -1 0 2; 0 1 -2 1; 2 0 1 -1; -1 1 0 1") if image is None else image
    kernel = parse_matrix("0 -0.5 0; -0.5 1 0.5; 0 0.5 0") if kernel is None else kernel
    kh = kernel.shape[0]
    if kernel.shape[0] != kernel.shape[1] or kh % 2 == 0:
        raise ValueError(f"the residual example needs an odd square kernel (got {kernel.shape[0]}x{kernel.shape[1]})")
    branch, _ = F.conv2d_forward(image[None, None], kernel[None, None], padding=kh // 2)
    branch = branch[0, 0]
    total = branch + image
    out, _ = F.relu_forward(total)
    lines = ["residual block: y = relu(F(x) + x). The block learns only the change F(x); the shortcut adds x back.",
             "x:", *matrix_lines(image, "  "),
             f"F(x): {kh}x{kh} convolution with padding {kh // 2}, so the shape stays (a 1x1 projection "
             f"conv + batch norm replaces x when it does not):", *matrix_lines(branch, "  "),
             "F(x) + x:", *matrix_lines(total, "  "), "y = relu(F(x) + x):", *matrix_lines(out, "  "),
             "backward: dy/dx = dF/dx + 1 where y > 0, so the gradient reaches x through the shortcut unchanged "
             "even when dF/dx is small: deep stacks of blocks still train."]
    return "\n".join(lines)


def explain_backprop(x: float = 2.0, w: float = 0.5, b: float = -0.5, target: float = 1.0) -> str:
    """The chain rule on one neuron: z = w*x + b, a = sigmoid(z), L = (a - t)^2, checked by finite differences."""
    def forward(w_value: float) -> float:
        a_value, _ = F.sigmoid_forward(np.array(w_value * x + b))
        return float((a_value - target) ** 2)

    z = w * x + b
    a, cache = F.sigmoid_forward(np.array(z))
    loss = float((a - target) ** 2)
    dl_da = 2.0 * (float(a) - target)
    da_dz = float(F.sigmoid_backward(np.array(1.0), cache))
    dl_dw, dl_db = dl_da * da_dz * x, dl_da * da_dz
    h = 1e-6
    numeric = (forward(w + h) - forward(w - h)) / (2 * h)
    lines = [f"one neuron: x = {fmt(x)}, w = {fmt(w)}, b = {fmt(b)}, target t = {fmt(target)}",
             "forward:",
             f"  z = w*x + b = {fmt(w)}*{fmt(x)} + {fmt(b)} = {fmt(z)}",
             f"  a = sigmoid(z) = 1 / (1 + exp(-{fmt(z)})) = {fmt(a)}",
             f"  L = (a - t)^2 = ({fmt(a)} - {fmt(target)})^2 = {fmt(loss)}",
             "backward (chain rule, each local derivative times the gradient from above):",
             f"  dL/da = 2(a - t) = {fmt(dl_da)}",
             f"  da/dz = a(1 - a) = {fmt(da_dz)}",
             f"  dz/dw = x = {fmt(x)},  dz/db = 1",
             f"  dL/dw = dL/da * da/dz * dz/dw = {fmt(dl_da)} * {fmt(da_dz)} * {fmt(x)} = {fmt(dl_dw)}",
             f"  dL/db = dL/da * da/dz * 1 = {fmt(dl_db)}",
             f"check by finite differences: (L(w + h) - L(w - h)) / 2h with h = 1e-6 gives {fmt(numeric)}",
             f"gradient descent with learning rate 0.1: w <- {fmt(w)} - 0.1 * {fmt(dl_dw)} = {fmt(w - 0.1 * dl_dw)}"]
    return "\n".join(lines)
