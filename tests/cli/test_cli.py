"""The command line: every subcommand works, and bad input is one line on stderr with exit code 2."""
import json
import subprocess
import sys

import numpy as np
import pytest
from cli_output import assert_one_line_error, run_cli
from PIL import Image

from convlab.cli import main


# -- errors ------------------------------------------------------------------------------------------
def test_unknown_model_suggests(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--model", "lenet5", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "unknown model 'lenet5'", "Did you mean lenet")


def test_unknown_dataset_suggests(capsys):
    code, _, err = run_cli(capsys, "train", "--data", "mnsit")
    assert_one_line_error(code, err, "unknown dataset 'mnsit'", "mnist")


def test_missing_data_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "--data-dir", "nowhere", "does not exist")


def test_missing_data_files_offline_say_what_to_put_where(capsys, tmp_path, monkeypatch):
    from convlab.data import sources

    closed = "http://127.0.0.1:9/"  # nothing listens there: the download fails at once, offline
    monkeypatch.setattr(sources, "MNIST_URLS", [closed])
    monkeypatch.setenv("CONVLAB_MIRROR", closed)
    monkeypatch.setattr("convlab.data.download.RETRY_DELAY_S", 0.0)
    (tmp_path / "d").mkdir()
    code, _, err = run_cli(capsys, "train", "--data", "mnist", "--data-dir", str(tmp_path / "d"))
    assert_one_line_error(code, err, "lacks train-images-idx3-ubyte", "could not download mnist",
                          "t10k-labels-idx1-ubyte.gz", "--data-dir")


def test_empty_class_folder(capsys, tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "imgs", per_class=3)
    (root / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--data", f"imagefolder:{root}")
    assert_one_line_error(code, err, "empty", "holds no images")


def test_unreadable_image_given_to_predict(capsys, digits_run, tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"this is not a png")
    code, _, err = run_cli(capsys, "predict", str(digits_run.path), str(bad))
    assert_one_line_error(code, err, "cannot read image", "photo.png")


def test_missing_image_given_to_predict(capsys, digits_run, tmp_path):
    code, _, err = run_cli(capsys, "predict", str(digits_run.path), str(tmp_path / "nope.png"))
    assert_one_line_error(code, err, "nope.png", "does not exist")


def test_run_folder_without_weights(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("model:\n  name: tiny-cnn\n")
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "run"))
    assert_one_line_error(code, err, "has no", "train again")


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "many"], "argument --epochs: invalid int value: 'many'"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    (["--lr", "-0.1"], "--lr: -0.1; must be > 0.0"),
    (["--batch-size", "0"], "--batch-size: 0; must be >= 1"),
    (["--val-fraction", "1.5"], "--val-fraction: 1.5; must be < 1.0"),
])
def test_invalid_flag_values(capsys, args, fragment):
    with pytest.raises(SystemExit) as exit_info:
        code = main(["train", *args])
        raise SystemExit(code)
    _, err = capsys.readouterr()
    assert_one_line_error(exit_info.value.code, err, fragment)


@pytest.mark.slow
def test_errors_in_a_real_process_have_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "convlab", "train", "--model", "nosuchnet", "--out",
                             str(tmp_path / "r")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert "unknown model 'nosuchnet'" in result.stderr
    assert not (tmp_path / "r").exists()


# -- working commands ----------------------------------------------------------------------------------
def test_train_prints_config_metrics_and_folder(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, _ = run_cli(capsys, "train", "--model", "tiny-cnn", "--epochs", "2", "--out", str(out_dir), "--quiet")
    assert code == 0
    assert "model=tiny-cnn*" in out and "optimizer=adamʳ" in out
    assert "epoch 1/2" in out and "epoch 2/2" in out
    assert "test: accuracy" in out and f"run folder: {out_dir}" in out
    assert (out_dir / "model.safetensors").is_file()


def test_train_with_config_file(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  name: tiny-cnn\ntrain:\n  epochs: 1\noptim:\n  lr: 0.004\n")
    code, out, _ = run_cli(capsys, "train", "--config", str(config), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0 and "lr=0.004ᶠ" in out and "epochs=1ᶠ" in out
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "lr: 0.004" in saved


def test_eval_and_predict_json(capsys, digits_run, tmp_path):
    code, out, _ = run_cli(capsys, "eval", str(digits_run.path), "--json")
    assert code == 0 and json.loads(out)["accuracy"] == digits_run.metrics["accuracy"]
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "blank.png")
    code, out, _ = run_cli(capsys, "predict", str(digits_run.path), str(tmp_path / "blank.png"), "--json",
                           "--top-k", "2")
    doc = json.loads(out)
    assert code == 0 and doc[0]["path"] == str(tmp_path / "blank.png")
    assert [set(t) for t in doc[0]["top"]] == [{"label", "prob"}] * 2


def test_eval_on_an_image_folder_maps_classes(capsys, tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "imgs", per_class=10)
    code, out, _ = run_cli(capsys, "train", "--data", f"imagefolder:{root}", "--model", "tiny-cnn", "--epochs", "3",
                           "--image-size", "16", "--val-fraction", "0", "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, out
    code, out, _ = run_cli(capsys, "eval", str(tmp_path / "run"), "--json")
    metrics = json.loads(out)
    assert set(metrics["per_class"]) == {"cat", "dog", "fox"}
    assert metrics["num_samples"] == 6  # 20% of 30, stratified
    code, out, _ = run_cli(capsys, "predict", str(tmp_path / "run"), str(root / "dog"), "--top-k", "1")
    assert code == 0 and len(out.strip().splitlines()) == 10


def test_models_and_datasets_lists(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    assert "mnist-cnn" in out and "34,826" in out and "resnet18" in out
    assert "tiny-detector" in out and "fasterrcnn_mobilenet_v3_large_320_fpn" in out
    assert "tiny-maskrcnn" in out and "maskrcnn_resnet50_fpn_v2" in out
    code, out, _ = run_cli(capsys, "datasets")
    tasks, *lines = out.strip().splitlines()
    header = lines.index("named recipes (--recipe NAME, applied over the dataset's):")
    lines, recipes = lines[:header], lines[header + 1:]
    assert [line.split()[0] for line in recipes] == ["cifar10", "photo"]
    assert code == 0 and tasks.startswith("tasks: classify (") and "detect (" in tasks and "segment (" in tasks
    named = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert named == ["digits", "mnist", "fashion-mnist", "cifar10", "imagefolder:PATH", "csv:PATH", "coco:PATH",
                     "yolo:PATH",
                     "voc:PATH", "shapes", "masks:PATH", "shape-masks", "instances:PATH", "shape-instances"]
    assert lines[0].startswith("digits") and "recipe: model=small-cnn" in lines[0]
    shapes = next(line for line in lines if line.startswith("shapes"))
    assert "recipe: task=detect model=tiny-detector" in shapes
    assert "recipe: task=segment model=tiny-unet" in next(line for line in lines if line.startswith("shape-masks"))
    assert "recipe: task=instance model=tiny-maskrcnn" in lines[-1]
    coco = lines.index(next(line for line in lines if line.startswith("coco:PATH")))
    assert "--task segment" in lines[coco + 1] and "task=segment" in lines[coco + 1]
    assert "--task instance" in lines[coco + 2] and "task=instance" in lines[coco + 2]
    csv = lines.index(next(line for line in lines if line.startswith("csv:PATH")))
    assert "classes from files" in lines[csv] and "--task multilabel" in lines[csv + 1]


@pytest.mark.parametrize("command", ["train", "eval", "predict", "models", "datasets"])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: convlab " + command in capsys.readouterr().out
