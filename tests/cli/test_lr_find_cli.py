"""`convlab lr-find` and `--lr find`: the plot and the suggestions printed, nothing else written, the run trained
at the printed rate, and bad values refused in one line."""
from __future__ import annotations

import re

import pytest
import yaml
from cli_output import assert_one_line_error, run_cli

from convlab.training.lr_find import END_LR, START_LR, STEPS

SUGGESTED = re.compile(r"^suggested learning rates: valley (\S+) \(V\), steepest (\S+) \(S\)$", re.M)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def suggestions(out: str) -> tuple[float, float]:
    found = SUGGESTED.findall(out)
    assert len(found) == 1, out
    return float(found[0][0]), float(found[0][1])


def test_lr_find_prints_the_suggestions_and_writes_the_plot_and_nothing_else(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "lr-find", "--threads", "1", "--steps", "30")
    assert code == 0, err
    valley, steepest = suggestions(out)
    assert START_LR < valley < END_LR and START_LR < steepest < END_LR
    assert "lr-find: the rate from 1e-07 to 1e+01 over at most 30 steps" in out
    assert "(learning rate, log)" in out and "V" in out.split("lr-find:")[-1]  # the text plot, marked
    assert out.rstrip().endswith("plot: lr_find.png")  # the default: in the current folder
    assert [p.name for p in tmp_path.iterdir()] == ["lr_find.png"]  # no run folder, no weights
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == PNG_MAGIC


def test_lr_find_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "lr-find", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {STEPS})" in text and f"(default: {START_LR:g})" in text and f"(default: {END_LR:g})" in text
    assert "--from SOURCE" in text and "lr_find.png" in text


def test_train_lr_find_trains_at_the_printed_rate(capsys, tmp_path):
    common = ["--epochs", "1", "--threads", "1", "--quiet"]
    code, out, err = run_cli(capsys, "train", "--lr", "find", *common, "--out", str(tmp_path / "found"))
    assert code == 0, err
    valley, _ = suggestions(out)
    assert f"--lr find: train trains at lr {valley:.3g} (valley)" in out
    saved = yaml.safe_load((tmp_path / "found" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == valley
    # the same run as one given that rate by hand: the finder leaves the seeds and the data order alone
    code, again, err = run_cli(capsys, "train", "--lr", str(valley), *common, "--out", str(tmp_path / "given"))
    assert code == 0, err
    test_line = re.compile(r"^test: .*\(best", re.M)
    assert test_line.findall(out)[0].split("(")[0] == test_line.findall(again)[0].split("(")[0]


def test_lr_find_on_a_fine_tune_ramps_its_first_stage(capsys, tmp_path, digits_run):
    plot = tmp_path / "ft.png"
    code, out, err = run_cli(capsys, "lr-find", "--from", str(digits_run.path), "--threads", "1", "--steps", "20",
                             "--out", str(plot))
    assert code == 0, err
    assert "stage 1/2 (epoch 1): trains head" in out  # two-stage: the head's stage is the one ramped
    assert "lr-find: ramps stage 1 of the fine-tune (trains head)" in out
    suggestions(out)
    assert plot.read_bytes()[:8] == PNG_MAGIC and [p.name for p in tmp_path.iterdir()] == ["ft.png"]


def test_finetune_lr_find_trains_at_the_printed_rate(capsys, tmp_path, digits_run):
    code, out, err = run_cli(capsys, "finetune", "--from", str(digits_run.path), "--lr", "find", "--epochs", "2",
                             "--threads", "1", "--quiet", "--out", str(tmp_path / "ft"))
    assert code == 0, err
    valley, _ = suggestions(out)
    assert f"--lr find: finetune trains at lr {valley:.3g} (valley)" in out
    saved = yaml.safe_load((tmp_path / "ft" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == valley and saved["finetune"]["source"] == str(digits_run.path)


@pytest.mark.slow
def test_lr_find_uses_the_task_step_of_a_segmenter(capsys, tmp_path):
    code, out, err = run_cli(capsys, "lr-find", "--data", "shape-masks", "--threads", "1", "--steps", "10",
                             "--out", str(tmp_path / "seg.png"))
    assert code == 0, err
    suggestions(out)
    assert (tmp_path / "seg.png").is_file()


@pytest.mark.parametrize("args, fragments", [
    (["train", "--lr", "fast"], ["--lr", "'fast' is not a rate", "find"]),
    (["finetune", "--lr", "fast"], ["--lr", "'fast' is not a rate"]),
    (["lr-find", "--steps", "0"], ["invalid value for --steps: 0", "10 to 1000"]),
    (["lr-find", "--end-lr", "1e-9"], ["invalid value for --end-lr", "above --start-lr"]),
    (["lr-find", "--out", "plot.pdf"], ["--out", "FILE.png"]),
    (["lr-find", "--lr", "0.1"], ["unrecognized arguments: --lr"]),
    (["lr-find", "--engine", "scratch"], ["the learning-rate finder trains with the torch engine",
                                          "leave out --engine scratch"]),
])
def test_bad_values_are_one_line_errors(capsys, tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    try:
        code, _, err = run_cli(capsys, *args)
    except SystemExit as stop:  # argparse's own errors leave main() through Parser.error
        code, err = stop.code, capsys.readouterr().err
    assert_one_line_error(code, err, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_lr_find_refuses_to_resume(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--lr", "find", "--resume", str(tmp_path))
    assert_one_line_error(code, err, "--lr find starts a new run", "leave out --lr")
