"""`convlab explain`: the texts' worked example, padding, stride, your own matrices and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from convlab.cli import main
from convlab.scratch.explain import EXAMPLE_INPUT, EXAMPLE_KERNEL, parse_matrix


def explain(capsys, *args):
    code = main(["explain", *args])
    out, err = capsys.readouterr()
    return code, out, err


def output_matrix(out: str, rows: int) -> list[str]:
    lines = out.strip().splitlines()
    assert lines[-rows - 1].startswith("output "), lines[-rows - 1]
    return lines[-rows:]


def torch_conv(image: str, kernel: str, stride=1, padding=0) -> np.ndarray:
    x = torch.tensor(parse_matrix(image))[None, None]
    w = torch.tensor(parse_matrix(kernel))[None, None]
    return TF.conv2d(x, w, stride=stride, padding=padding)[0, 0].numpy()


def as_rows(m: np.ndarray) -> list[str]:
    return [" ".join(str(int(v)) for v in row) for row in m]


def cells(lines: list[str]) -> list[list[str]]:
    return [line.split() for line in lines]


def test_the_worked_example_gives_the_correct_rows(capsys):
    code, out, _ = explain(capsys, "conv")
    assert code == 0
    assert output_matrix(out, 3) == ["4 3 4", "2 4 3", "2 3 4"]  # the texts' [[4,4,3],...] is wrong
    assert "sum = 1 + 0 + 0 + 0 + 1 + 0 + 0 + 0 + 1 = 3" in out  # the second window
    assert out.count("window (") == 9
    assert "cross-correlation" in out.splitlines()[0]


def test_padding_shows_the_padded_input_and_a_5x5_output(capsys):
    code, out, _ = explain(capsys, "conv", "--padding", "1")
    assert code == 0
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("input with 1 ring"))
    assert "7x7" in lines[start]
    assert [line.strip() for line in lines[start + 1:start + 8]][0] == "0 0 0 0 0 0 0"
    assert cells(output_matrix(out, 5)) == cells(as_rows(torch_conv(EXAMPLE_INPUT, EXAMPLE_KERNEL, padding=1)))
    assert out.count("window (") == 25


def test_stride_two_gives_a_2x2_output(capsys):
    code, out, _ = explain(capsys, "conv", "--stride", "2")
    assert code == 0
    assert output_matrix(out, 2) == ["4 4", "2 4"]
    assert output_matrix(out, 2) == as_rows(torch_conv(EXAMPLE_INPUT, EXAMPLE_KERNEL, stride=2))


def test_own_matrices_and_true_convolution(capsys):
    image, kernel = "1 2 0; 0 1 3; 4 0 1", "1 2; 0 -1"
    code, out, _ = explain(capsys, "conv", "--input", image, "--kernel", kernel)
    assert cells(output_matrix(out, 2)) == cells(as_rows(torch_conv(image, kernel)))
    code, out, _ = explain(capsys, "conv", "--input", image, "--kernel", kernel, "--mode", "convolution")
    assert code == 0
    assert "180 degrees" in out.splitlines()[0]
    assert cells(output_matrix(out, 2)) == cells(as_rows(torch_conv(image, "-1 0; 2 1")))  # the kernel turned


@pytest.mark.parametrize("args, fragments", [
    (["--input", "1 2; 3"], ["--input '1 2; 3'", "different lengths"]),
    (["--kernel", "1 x; 0 1"], ["--kernel '1 x; 0 1'", "'x' is not a number"]),
    (["--input", " ; "], ["--input", "empty"]),
    (["--kernel", "1 1 1 1 1 1"], ["larger than"]),
    (["--kernel", "1 1 1 1 1 1 1; 1 1 1 1 1 1 1"], ["2x7 kernel", "larger than the 5x5"]),
    (["--stride", "0"], ["--stride", "stride must be >= 1 and padding >= 0 (got stride 0"]),
])
def test_malformed_matrices_fail_in_one_line(capsys, args, fragments):
    code, _, err = explain(capsys, "conv", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_pool_shows_max_and_average(capsys):
    code, out, _ = explain(capsys, "pool")
    assert code == 0
    lines = out.splitlines()
    i = lines.index("max pooling output 2x2:")
    assert lines[i + 1:i + 3] == ["6 4", "7 9"]
    assert [line.split() for line in lines[i + 4:i + 6]] == [["3.75", "2.25"], ["4", "4.5"]]


def test_linear_residual_and_backprop_traces(capsys):
    code, out, _ = explain(capsys, "linear", "--x", "1 2", "--weight", "1 1; 2 -1", "--bias", "0.5 0")
    assert code == 0 and "y[0] = 1*1 + 1*2 + 0.5 = 3.5" in out and "y[1] = 2*1 + -1*2 + 0 = 0" in out
    code, out, _ = explain(capsys, "residual")
    assert code == 0 and "y = relu(F(x) + x)" in out
    code, out, _ = explain(capsys, "backprop")
    lines = out.splitlines()
    analytic = next(line for line in lines if line.strip().startswith("dL/dw ="))
    numeric = next(line for line in lines if line.startswith("check by finite differences"))
    assert analytic.split()[-1] == numeric.split()[-1] == "-0.3549"


def test_explain_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "conv", "--help"])
    assert exit_info.value.code == 0
    assert "--padding" in capsys.readouterr().out
