"""Variant folders met by commands that need something else, and a variant with a damaged metrics.json."""
import shutil

from convlab.compress import load_variant


def truncate_metrics(folder):
    path = folder / "metrics.json"
    path.write_text(path.read_text()[:40])
    return path


def one_warning(err, path):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("warning: ") and str(path) in lines[0] and "convlab eval" in lines[0], lines[0]


def test_an_int8_variant_with_a_truncated_metrics_json_loads(capsys, quantized_runs, tmp_path):
    folder = shutil.copytree(quantized_runs["dynamic"].path, tmp_path / "int8")
    path = truncate_metrics(folder)
    assert load_variant(folder).metrics is None
    one_warning(capsys.readouterr().err, path)
