"""convlab compare: one row per variant with size, accuracy and latency; a table and a chart."""
import json

import pytest

from convlab.cli import main
from convlab.compress.compare import compare


def test_compare_rows_measure_each_variant(digits_run, pruned_run, quantized_runs):
    paths = [digits_run.path, pruned_run.path, quantized_runs["static"].path]
    rows = compare(paths, latency_seconds=0.01)
    assert [row["kind"] for row in rows] == ["float", "pruned", "int8-static"]
    assert rows[0]["size_mb"] == (digits_run.path / "model.safetensors").stat().st_size / 1e6
    assert rows[2]["size_mb"] == (quantized_runs["static"].path / "model.int8.safetensors").stat().st_size / 1e6
    assert rows[0]["accuracy"] == pytest.approx(digits_run.metrics["accuracy"])
    assert rows[1]["sparsity"] == pytest.approx(0.5, abs=1e-3) and rows[2]["sparsity"] is None
    for row in rows:
        assert row["ms_per_image_batch_1"] > 0 and row["ms_per_image_batch_64"] > 0
        assert row["test_images"] == 360 and row["threads"] == 1


def test_compare_cli_prints_the_table_and_saves_the_chart(capsys, tmp_path, digits_run, quantized_runs):
    chart, rows_file = tmp_path / "cmp.png", tmp_path / "rows.json"
    code = main(["compare", str(digits_run.path), str(quantized_runs["dynamic"].path), "--chart", str(chart),
                 "--json", str(rows_file), "--seconds", "0.01"])
    out = capsys.readouterr().out
    assert code == 0
    assert "int8-dynamic" in out and "ms/img b=64" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(json.loads(rows_file.read_text())) == 2


def test_compare_reports_a_missing_folder_in_one_line(capsys, tmp_path):
    code = main(["compare", str(tmp_path / "nowhere"), "--chart", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert code == 2 and "nowhere does not exist" in err and err.count("\n") == 1


def test_runs_of_different_datasets_say_per_row_what_they_were_scored_on(capsys, tmp_path, digits_run,
                                                                         make_image_folder):
    from convlab import train

    folder = make_image_folder(tmp_path / "imgs", per_class=10)
    other = train(data=f"imagefolder:{folder}", model="tiny-cnn", epochs=1, threads=1, quiet=True,
                  out=str(tmp_path / "folder-run"))
    rows = compare([digits_run.path, other.path], latency_seconds=0.01)
    assert [(row["test_data"], row["test_images"]) for row in rows] == [("digits", 360),
                                                                         (f"imagefolder:{folder}", 6)]
    assert rows[1]["accuracy"] == pytest.approx(other.metrics["accuracy"])  # on its own split, not digits'
    capsys.readouterr()
    code = main(["compare", str(digits_run.path), str(other.path), "--markdown", "--seconds", "0.01",
                 "--chart", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert code == 0
    assert "360 test images" not in out and "each row's own test split" in out
    header = next(line for line in out.splitlines() if line.startswith("| variant"))
    assert "| test data |" in header
    assert "| digits (360) |" in out and f"| imagefolder:{folder} (6) |" in out


def test_variants_of_one_run_name_their_shared_split_in_the_title(capsys, tmp_path, digits_run, quantized_runs):
    code = main(["compare", str(digits_run.path), str(quantized_runs["dynamic"].path), "--markdown",
                 "--seconds", "0.01", "--chart", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    assert code == 0 and out.startswith("360 test images of digits; latency")
    assert "test data" not in out
