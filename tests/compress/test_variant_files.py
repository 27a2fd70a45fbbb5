"""Variant folders met by commands that need something else, and a variant with a damaged metrics.json."""
import shutil

import pytest
from cli_output import one_warning, truncate_metrics

from convlab.compress import load_variant


def test_an_int8_variant_with_a_truncated_metrics_json_loads(capsys, quantized_runs, tmp_path):
    folder = shutil.copytree(quantized_runs["dynamic"].path, tmp_path / "int8")
    path = truncate_metrics(folder)
    assert load_variant(folder).metrics is None
    one_warning(capsys.readouterr().err, path)


def run_cli(capsys, *args):
    from convlab.cli import main

    code = main([str(arg) for arg in args])
    return code, capsys.readouterr().err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", [("compress", "prune"), ("report",)])
def test_an_onnx_file_is_named_as_one_where_a_float_run_is_needed(capsys, onnx_file, tmp_path, command):
    code, err = run_cli(capsys, *command, onnx_file, "--out", tmp_path / "out")
    assert_one_line_error(code, err, f"{onnx_file} is an ONNX file: {command[-1]} needs a run folder with float "
                                     f"weights (the run it was exported from)")
    assert "does not exist" not in err


@pytest.mark.parametrize("command", [("compress", "quantize"), ("report",)])
def test_an_int8_variant_is_named_as_one_where_a_float_run_is_needed(capsys, quantized_runs, tmp_path, command):
    variant = quantized_runs["dynamic"].path
    code, err = run_cli(capsys, *command, variant, "--out", tmp_path / "out")
    assert_one_line_error(code, err, f"{variant} is an int8 variant (model.int8.safetensors): {command[-1]} needs a "
                                     f"run folder with float weights (the run it was quantized from")
    assert "not a finished" not in err
