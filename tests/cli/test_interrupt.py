"""Ctrl-C (a real SIGINT) during `convlab tune` and under torchrun: one line per process, exit code 130."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[2] / "src"


def start(command: list[str], tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", CONVLAB_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # its own process group, as a terminal's job


def ctrl_c_when(process: subprocess.Popen, path: Path, timeout: float = 300) -> tuple[str, str]:
    """Once `path` exists (training has started), SIGINT to the whole process group, as Ctrl-C sends it."""
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    time.sleep(0.5)  # inside the first epoch
    os.killpg(process.pid, signal.SIGINT)
    return process.communicate(timeout=120)


@pytest.mark.slow
def test_ctrl_c_during_tune_says_in_one_line_that_rerunning_the_command_continues_the_study(tmp_path):
    pytest.importorskip("optuna", reason="convlab tune needs optuna (pip install -e '.[tune]')")
    study = tmp_path / "study"
    tune = start([sys.executable, "-m", "convlab", "tune", "--out", str(study), "--trials", "3", "--epochs", "40",
                  "--data", "digits", "--model", "tiny-cnn", "--param", "lr=0.001,0.003", "--search", "random",
                  "--threads", "1"], tmp_path)
    _, stderr = ctrl_c_when(tune, study / "trials" / "trial-0000" / "checkpoints" / "last.safetensors")
    assert tune.returncode == 130
    assert stderr == (f"convlab tune: interrupted; the study in {study / 'study.db'} keeps the trials finished so "
                      f"far (0); run the same command again to continue it\n")


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_ctrl_c_under_torchrun_ends_each_rank_with_one_line(tmp_path):
    run = tmp_path / "run"
    job = start([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                 "convlab", "train", "--model", "tiny-cnn", "--epochs", "40", "--threads", "1", "--device", "cpu",
                 "--out", str(run)], tmp_path)
    _, stderr = ctrl_c_when(job, run / "checkpoints" / "last.safetensors")
    lines = stderr.splitlines()
    assert sorted(line for line in lines if line.startswith("convlab")) == [
        "convlab train: rank 0 of 2: interrupted", "convlab train: rank 1 of 2: interrupted"]
    # What is left is torchrun's own: its agent raises from its signal handler, outside convlab's processes
    # (docs/distributed.md says so); no traceback passes through convlab's code.
    assert stderr.count("Traceback") == 1 and lines[-1].startswith(
        "torch.distributed.elastic.multiprocessing.api.SignalException")
    assert "convlab/" not in stderr.split("Traceback")[1]
