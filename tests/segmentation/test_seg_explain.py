"""`convlab explain upsample`: the stamps of a transposed convolution, bilinear and nearest upsampling step by step,
each against torch in float64; the checkerboard's overlap counts; bad options in one line."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_output import assert_one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convlab.cli import main
from convlab.segmentation.explain import (bilinear_steps, explain_upsample, is_even, nearest_steps, overlap_counts,
                                          transposed_steps)


def torch_transposed(image, kernel, stride, padding=0) -> np.ndarray:
    x = torch.tensor(np.asarray(image, dtype=np.float64))[None, None]
    k = torch.tensor(np.asarray(kernel, dtype=np.float64))[None, None]
    return F.conv_transpose2d(x, k, stride=stride, padding=padding)[0, 0].numpy()


def torch_interpolate(image, scale, mode) -> np.ndarray:
    x = torch.tensor(np.asarray(image, dtype=np.float64))[None, None]
    options = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x, scale_factor=scale, mode=mode, **options)[0, 0].numpy()


def printed_matrix(lines: list[str], header: str) -> np.ndarray:
    """The matrix printed under the line `header`, one row per indented line."""
    start = lines.index(header) + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("  ") or "=" in line:
            break
        rows.append([float(v) for v in line.split()])
    return np.array(rows)


# --- the steps against torch --------------------------------------------------------------------------------

def test_the_example_stamps_add_up_to_conv_transpose2d():
    s = transposed_steps()
    assert s.image.tolist() == [[1, 2], [3, 4]] and s.kernel.shape == (3, 3) and s.stride == 2
    assert [(t.row, t.col, t.top, t.left) for t in s.stamps] == [(0, 0, 0, 0), (0, 1, 0, 2), (1, 0, 2, 0),
                                                                  (1, 1, 2, 2)]
    assert all(np.array_equal(t.stamp, t.value * s.kernel) for t in s.stamps)
    np.testing.assert_array_equal(s.output, torch_transposed(s.image, s.kernel, 2))
    # the centre cell is where all four stamps' corners land: 1 + 2 + 3 + 4
    assert s.output[2, 2] == 10 and s.cell_terms(2, 2) == [(1, 1), (2, 1), (3, 1), (4, 1)]
    assert s.cell_terms(0, 0) == [(1, 1)] and s.cell_terms(1, 1) == [(1, 2)]


def test_after_each_stamp_the_output_is_the_transposed_convolution_of_the_cells_so_far():
    image, kernel = np.arange(1.0, 10.0).reshape(3, 3), np.array([[1.0, -2.0], [0.5, 3.0]])
    s = transposed_steps(image, kernel, stride=2)
    for k, stamp in enumerate(s.stamps):
        so_far = (np.arange(9) <= k).reshape(3, 3)  # the input cells stamped so far
        np.testing.assert_allclose(stamp.after, torch_transposed(image * so_far, kernel, 2), rtol=1e-12)
        np.testing.assert_array_equal(stamp.covered, torch_transposed(so_far, np.ones((2, 2)), 2))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3),
       st.integers(0, 2), st.data())
def test_transposed_steps_equal_torch_for_any_shape(h, w, kh, kw, stride, padding, data):
    values = st.floats(-10, 10, allow_nan=False, width=32)
    image = data.draw(arrays(np.float64, (h, w), elements=values))
    kernel = data.draw(arrays(np.float64, (kh, kw), elements=values))
    full = ((h - 1) * stride + kh, (w - 1) * stride + kw)
    if min(full) <= 2 * padding:
        with pytest.raises(ValueError, match=f"padding {padding} cuts"):
            transposed_steps(image, kernel, stride, padding)
        return
    s = transposed_steps(image, kernel, stride, padding)
    expected = torch_transposed(image, kernel, stride, padding)
    np.testing.assert_allclose(s.output, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(s.reference, expected)
    r, c = data.draw(st.integers(0, expected.shape[0] - 1)), data.draw(st.integers(0, expected.shape[1] - 1))
    assert sum(v * k for v, k in s.cell_terms(r, c)) == pytest.approx(expected[r, c], abs=1e-9)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (4, 2)])
def test_bilinear_and_nearest_equal_interpolate(shape, scale):
    image = np.random.default_rng(scale).normal(size=shape)
    bilinear = bilinear_steps(image, scale)
    np.testing.assert_allclose(bilinear.output, torch_interpolate(image, scale, "bilinear"), rtol=1e-12, atol=1e-12)
    assert all(sum(r.weights) == pytest.approx(1) and min(r.weights) >= 0 for r in bilinear.rows + bilinear.cols)
    nearest = nearest_steps(image, scale)
    np.testing.assert_array_equal(nearest.output, torch_interpolate(image, scale, "nearest"))


def test_bilinear_places_each_output_cell_between_two_input_cells():
    s = bilinear_steps(np.array([[1.0, 2.0], [3.0, 4.0]]), 2)
    assert [(r.position, r.low, r.high, r.weights) for r in s.rows] == [
        (-0.25, 0, 1, (1.0, 0.0)),  # before the first cell's centre: clamped to it
        (0.25, 0, 1, (0.75, 0.25)), (0.75, 0, 1, (0.25, 0.75)),
        (1.25, 1, 1, (0.75, 0.25))]  # past the last centre: only the last cell counts
    assert s.output[1, 1] == 0.5625 * 1 + 0.1875 * 2 + 0.1875 * 3 + 0.0625 * 4


# --- the checkerboard ---------------------------------------------------------------------------------------

def test_kernel_3_stride_2_covers_cells_unevenly_and_kernel_4_evenly():
    k3, k4 = overlap_counts((4, 4), (3, 3), 2), overlap_counts((4, 4), (4, 4), 2)
    np.testing.assert_array_equal(k3, torch_transposed(np.ones((4, 4)), np.ones((3, 3)), 2))
    assert k3[2:7, 2:7].tolist()[:2] == [[4, 2, 4, 2, 4], [2, 1, 2, 1, 2]]  # away from the border: a checkerboard
    assert set(k4[3:7, 3:7].ravel()) == {4}  # every inner cell under 4 stamps
    assert not is_even((3, 3), 2) and is_even((4, 4), 2) and is_even((3, 3), 1) and is_even((6, 3), 3)


@pytest.mark.parametrize("size, stride", [(k, s) for k in range(1, 7) for s in range(1, 4)])
def test_evenness_is_what_the_counts_show_away_from_the_border(size, stride):
    n = 8
    counts = overlap_counts((n, n), (size, size), stride)
    inner = counts[size - 1:(n - 1) * stride + 1, size - 1:(n - 1) * stride + 1]  # every stamp that can reach
    assert (len(set(inner.ravel())) == 1) == is_even((size, size), stride)


# --- the command --------------------------------------------------------------------------------------------

def test_the_default_prints_each_stamp_the_overlap_sums_and_torchs_check(capsys):
    code, out, err = run_cli(capsys, "explain", "upsample")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert "input (1,1) = 4: 4 x kernel, added at rows 2-4, columns 2-4" in lines
    assert lines[lines.index("input (1,1) = 4: 4 x kernel, added at rows 2-4, columns 2-4") + 2] == "  4 8 4"
    assert "  (2,2) = 1*1 + 2*1 + 3*1 + 4*1 = 10" in lines
    assert "  (0,0) = 1*1 = 1" not in lines  # only the overlaps are written out
    np.testing.assert_array_equal(printed_matrix(lines, "output 5x5:"),
                                  torch_transposed([[1, 2], [3, 4]], [[1, 1, 1], [1, 2, 1], [1, 1, 1]], 2))
    assert "torch.nn.functional.conv_transpose2d in float64: the same" in lines
    uneven = next(line for line in lines if line.startswith("kernel 3x3, uneven"))
    even = next(line for line in lines if line.startswith("kernel 4x4, even"))
    np.testing.assert_array_equal(printed_matrix(lines, uneven), overlap_counts((3, 3), (3, 3), 2))
    np.testing.assert_array_equal(printed_matrix(lines, even), overlap_counts((3, 3), (4, 4), 2))
    assert even.endswith("covered 4 times:")
    assert len(lines) < 70  # fits a terminal, give or take


def test_own_matrices_stride_and_padding(capsys):
    image, kernel = [[1, -2, 0.5], [0, 3, 1]], [[1, 0.5], [-1, 2]]
    code, out, _ = run_cli(capsys, "explain", "upsample", "--input", "1 -2 0.5; 0 3 1", "--kernel", "1 0.5; -1 2",
                           "--stride", "3", "--padding", "1")
    lines = out.splitlines()
    expected = torch_transposed(image, kernel, 3, 1)
    assert code == 0 and expected.shape == (3, 6)
    assert "all stamps added, 5x8, before padding 1 cuts 1 row(s) and column(s) from each side:" in lines
    np.testing.assert_allclose(printed_matrix(lines, "output 3x6:"), expected)
    assert "kernel 2x2, uneven: the kernel is smaller than the stride 3, so some cells get no stamp at all:" in lines
    assert "  (none overlap here: each cell holds one stamp's number, or 0 where no stamp reaches)" in lines


@pytest.mark.parametrize("mode, stride", [("bilinear", 2), ("bilinear", 3), ("nearest", 2)])
def test_bilinear_and_nearest_commands_agree_with_interpolate(capsys, mode, stride):
    code, out, _ = run_cli(capsys, "explain", "upsample", "--mode", mode, "--input", "1 2 0; 3 4 -1",
                           "--stride", str(stride))
    lines = out.splitlines()
    expected = torch_interpolate([[1, 2, 0], [3, 4, -1]], stride, mode)
    assert code == 0
    np.testing.assert_allclose(printed_matrix(lines, f"output {2 * stride}x{3 * stride}:"), expected, atol=5e-4)
    assert lines[-1].startswith(f"torch.nn.functional.interpolate(mode='{mode}'") and lines[-1].endswith("the same")


def test_bilinear_writes_each_cells_four_neighbours(capsys):
    _, out, _ = run_cli(capsys, "explain", "upsample", "--mode", "bilinear")
    lines = out.splitlines()
    assert "  output row 1: (1 + 0.5)/2 - 0.5 = 0.25 -> input rows 0 and 1, weights 0.75 and 0.25" in lines
    assert "  output column 0: (0 + 0.5)/2 - 0.5 = -0.25, before the first cell: 0 -> input columns 0 and 1, " \
           "weights 1 and 0" in lines
    assert "  (1,1) = 0.5625*1 + 0.1875*2 + 0.1875*3 + 0.0625*4 = 1.75" in lines


def test_nearest_copies_blocks(capsys):
    _, out, _ = run_cli(capsys, "explain", "upsample", "--mode", "nearest", "--stride", "3")
    assert "  input (1,0) = 3 -> output rows 3-5, columns 0-2" in out.splitlines()


@pytest.mark.parametrize("args, fragments", [
    (["--input", "1 2; 3"], ["--input '1 2; 3'", "rows have different lengths"]),
    (["--kernel", "1 x"], ["--kernel '1 x'", "'x' is not a number"]),
    (["--stride", "0"], ["--stride 0", "the stride must be a whole number >= 1, got 0"]),
    (["--padding", "-1"], ["--padding -1", "the padding must be a whole number >= 0, got -1"]),
    (["--padding", "3"], ["padding 3 cuts 3 rows and columns from each side of the 5x5 output, leaving nothing"]),
    (["--stride", "40", "--input", "1 2 3; 4 5 6"], ["the output would be 43x83, more than 64 a side"]),
    (["--mode", "bilinear", "--kernel", "1 1; 1 1"], ["--mode bilinear", "bilinear upsampling has no kernel",
                                                      "only with --mode transposed"]),
    (["--mode", "nearest", "--padding", "1"], ["nearest upsampling has no kernel and no padding"]),
    (["--mode", "nearest", "--stride", "33"], ["the output would be 66x66"]),
    (["--input", "1e400 1"], ["every number of the input and kernel must be finite"]),
    (["--input", "1e308 1e308", "--kernel", "10", "--stride", "1"], ["the stamps' sums overflow float64"]),
])
def test_bad_options_fail_in_one_line(capsys, args, fragments):
    code, out, err = run_cli(capsys, "explain", "upsample", *args)
    assert out == ""
    assert_one_line_error(code, err, "error: ", *fragments)


def test_an_unknown_mode_fails_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(["explain", "upsample", "--mode", "bicubic"]))
    assert_one_line_error(exit_info.value.code, capsys.readouterr().err, "argument --mode: invalid choice: 'bicubic'")


def test_explain_upsample_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of transposed, bilinear, nearest"):
        explain_upsample("bicubic")


def docs_section() -> str:
    """The upsampling section of docs/from-scratch.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "from-scratch.md").read_text(encoding="utf-8")
    section = re.search(r"^## Upsampling: `convlab explain upsample`\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, "docs/from-scratch.md has no upsampling section"
    return section.group(1)


def test_the_documented_commands_run(capsys):
    block = re.search(r"^```bash\n(.*?)^```", docs_section(), flags=re.S | re.M).group(1)
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert len(commands) == 4 and all(c[:3] == ["convlab", "explain", "upsample"] for c in commands)
    for command in commands:
        code, out, err = run_cli(capsys, *command[1:])
        assert code == 0 and err == "" and out.rstrip().endswith(("the same", "then convolve")), command


def test_the_sample_in_the_docs_is_what_the_command_prints(capsys):
    sample = re.search(r"^```text\n(.*?)^```", docs_section(), flags=re.S | re.M).group(1).splitlines()
    _, out, _ = run_cli(capsys, "explain", "upsample")
    printed = out.splitlines()
    shown = [line for line in sample if line != "..."]
    assert len(shown) > 20 and all(line in printed for line in shown)
    at = [printed.index(line) for line in shown if printed.count(line) == 1]
    assert at == sorted(at)  # in the order the command prints them
