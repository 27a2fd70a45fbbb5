"""A run folder's files: written atomically (a crash leaves the old file or the new one), and a damaged
metrics.json is a one-line warning, never a traceback, for the commands that only use the model."""
import json
import os

import numpy as np
import pytest
from cli_output import one_warning, truncate_metrics
from PIL import Image

from convlab import load_run
from convlab.cli import main


def test_predict_and_eval_on_a_run_with_a_truncated_metrics_json_warn_and_go_on(capsys, digits_run_copy, tmp_path):
    path = truncate_metrics(digits_run_copy.path)
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    assert main(["predict", str(digits_run_copy.path), str(image), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["path"] == str(image)
    one_warning(err, path)
    assert main(["eval", str(digits_run_copy.path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["num_samples"] == 360
    one_warning(err, path)


def test_a_loaded_run_with_a_damaged_metrics_json_has_no_metrics(capsys, digits_run_copy):
    (digits_run_copy.path / "metrics.json").write_text("[1, 2]")  # JSON, but not the metrics object
    assert load_run(digits_run_copy.path).metrics is None
    one_warning(capsys.readouterr().err, digits_run_copy.path / "metrics.json")


@pytest.mark.parametrize("write", ["metrics", "variant files", "model files"])
def test_a_failed_write_leaves_the_old_run_files_whole(digits_run_copy, monkeypatch, write):
    """Every writer of run files writes a temp file, fsyncs and renames: a failure before the rename (here the
    fsync) leaves each file as it was, and no temp file behind."""
    from convlab.compress.variant import write_variant_files

    run = digits_run_copy
    names = ["metrics.json", "labels.json", "preprocess.json", "config.yaml"]
    before = {name: (run.path / name).read_bytes() for name in names}
    run.metrics = {"accuracy": 0.0}
    run.classes = [f"class {i}" for i in range(10)]

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    action = {"metrics": run.save_metrics, "variant files": lambda: write_variant_files(run, {"variant": "x"}),
              "model files": run.save_model}[write]
    with pytest.raises(OSError, match="No space left"):
        action()
    assert {name: (run.path / name).read_bytes() for name in names} == before
    assert not [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")]
