"""Checkpoint files: exact round trip without pickle, atomic replacement, resume's rules, the free-space check."""
from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pytest
import torch

import convlab
from convlab.errors import ConvlabError
from convlab.training.checkpoint import (CHECKPOINTS, LAST, atomic_write, check_free_space, load_checkpoint,
                                         save_checkpoint)


def test_round_trip_is_exact(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "python": random.getstate(),
             "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "nested": {"a": (1, 2.5, None, "x")},
             "int_keys": {3: [True, float("inf")]}, "extra": {"freeze": {"stage": 2, "groups": ["head"]}}}
    save_checkpoint(tmp_path / "c.safetensors", state)
    loaded = load_checkpoint(tmp_path / "c.safetensors")
    assert loaded["python"] == state["python"]
    assert loaded["numpy"][0] == "MT19937" and np.array_equal(loaded["numpy"][1], state["numpy"][1])
    assert loaded["numpy"][1].dtype == state["numpy"][1].dtype
    assert torch.equal(loaded["torch"], state["torch"])
    assert loaded["nested"] == state["nested"] and loaded["int_keys"] == state["int_keys"]
    assert loaded["extra"] == state["extra"]
    restored = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    restored.load_state_dict(loaded["optimizer"])
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    assert (tmp_path / "c.safetensors").read_bytes()[8:9] == b"{"  # safetensors, not a pickle


def test_a_crash_during_a_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.safetensors"
    atomic_write(target, b"old")

    def crash(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["last.safetensors"]  # no temp file left


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x08\x00\x00\x00\x00\x00\x00\x00{}", b"\x80\x04K\x01."])
def test_damaged_checkpoint_is_a_clear_error(tmp_path, content):
    (tmp_path / "last.safetensors").write_bytes(content)
    with pytest.raises(ConvlabError, match=r"last\.safetensors"):
        load_checkpoint(tmp_path / "last.safetensors")


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ConvlabError, match=r"has 0\.0 MB free, but checkpoints of this model need about"):
        convlab.train(data="digits", model="tiny-cnn", epochs=1, out=str(tmp_path / "run"), quiet=True)
    assert not (tmp_path / "run" / CHECKPOINTS).exists()
    with pytest.raises(ConvlabError, match="MB free"):
        check_free_space(tmp_path, 10**6)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "run"
    convlab.train(data="digits", model="tiny-cnn", epochs=1, schedule="none", out=str(out), quiet=True)
    return out


@pytest.mark.parametrize("flags, message", [
    ({"lr": 0.5}, r"--lr 0\.5 would change the run being resumed \(it has lr=0\.003\).*--config .*config\.yaml --lr 0\.5"),
    ({"epochs": 1}, r"already finished its 1 epochs"),
    ({"out": "elsewhere"}, r"--out elsewhere differs from --resume"),
])
def test_resume_refuses_changes(short_run, flags, message):
    with pytest.raises(ConvlabError, match=message):
        convlab.train(resume=str(short_run), **flags)


def test_resume_errors_name_the_folder(tmp_path):
    with pytest.raises(ConvlabError, match="no such run folder"):
        convlab.train(resume=str(tmp_path / "nothing"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("data: digits\n")
    with pytest.raises(ConvlabError, match=r"no checkpoints/last\.safetensors there"):
        convlab.train(resume=str(tmp_path / "half"))
    with pytest.raises(ConvlabError, match="leave out --config"):
        convlab.train("x.yaml", resume=str(tmp_path / "half"))


def test_resume_can_extend_a_run_without_schedule(short_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(short_run, run_dir)
    longer = convlab.train(resume=str(run_dir), epochs=3, quiet=True)
    assert longer.metrics["epochs_run"] == 3
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 4
    assert load_checkpoint(run_dir / CHECKPOINTS / LAST)["epoch"] == 3
    assert (run_dir / CHECKPOINTS / "best.safetensors").is_file()


def test_a_new_run_in_a_used_folder_points_to_resume(short_run):
    with pytest.raises(ConvlabError, match=f"convlab train --resume {short_run}"):
        convlab.train(data="digits", out=str(short_run))


def test_a_mid_epoch_resume_on_another_world_size_skips_the_same_share_and_splits_the_sums():
    from convlab.training.checkpoint import _resume_point

    saved = [{"partial": {"loss_sum": torch.tensor(6.0), "correct": torch.tensor(9), "seen": 40}},
             {"partial": {"loss_sum": torch.tensor(4.0), "correct": torch.tensor(7), "seen": 40}}]
    # The same world size: this rank's own position and sums, untouched.
    assert _resume_point(5, saved, saved[1], 2) == (5, saved[1]["partial"])
    # Two ranks did 5 batches each; one rank now does the 10 of the same images, with the summed sums.
    batch, partial = _resume_point(5, saved, saved[0], 1)
    assert batch == 10 and float(partial["loss_sum"]) == 10.0 and int(partial["correct"]) == 16
    assert partial["seen"] == 80
    batch, partial = _resume_point(5, saved, saved[0], 4)  # four ranks: 2 batches each, a quarter of the sums
    assert batch == 2 and float(partial["loss_sum"]) == 2.5 and int(partial["correct"]) == 4 and partial["seen"] == 20


def test_a_checkpoint_of_two_processes_continues_in_one_and_says_so(short_run, tmp_path):
    """As if two ranks had written it (each rank's states in `ranks`): one process picks rank 0's and notes the
    changed world size."""
    import io

    from rich.console import Console

    run_dir = tmp_path / "run"
    shutil.copytree(short_run, run_dir)
    record = load_checkpoint(run_dir / CHECKPOINTS / LAST)
    record.update(world_size=2, ranks=[record["ranks"][0], record["ranks"][0]])
    save_checkpoint(run_dir / CHECKPOINTS / LAST, record)
    console = Console(file=io.StringIO(), width=200)
    longer = convlab.train(resume=str(run_dir), epochs=2, quiet=True, console=console)
    assert "note: the checkpoint was written by 2 processes, this job has 1: training continues with the new " \
           "shards" in console.file.getvalue()
    assert longer.metrics["epochs_run"] == 2
    assert load_checkpoint(run_dir / CHECKPOINTS / LAST)["world_size"] == 1
