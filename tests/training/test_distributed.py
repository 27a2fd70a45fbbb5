"""torchrun with 2 CPU processes (gloo): one run folder, metrics comparable to a single process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convlab.data.arrays import ImageArrays
from convlab.data.batches import BatchLoader, Normalization

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")

SRC = Path(__file__).resolve().parents[2] / "src"
FLAGS = ["train", "--data", "digits", "--model", "small-cnn", "--epochs", "6", "--batch-size", "32", "--quiet",
         "--threads", "1"]


def run_convlab(args, cwd, launcher=()):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *launcher, "-m", "convlab", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_shards_are_disjoint_equal_and_cover_the_data():
    data = ImageArrays(np.arange(11, dtype=np.uint8).reshape(11, 1, 1, 1), np.arange(11))
    norm = Normalization([0.0], [1.0])
    seen = []
    for rank in range(3):
        loader = BatchLoader(data, 2, norm, torch.device("cpu"), shuffle=True,
                             generator=torch.Generator().manual_seed(4), rank=rank, world_size=3)
        labels = torch.cat([y for _, y in loader]).tolist()
        assert len(labels) == loader.num_samples == 4  # ceil(11 / 3), padded
        seen.append(labels)
    flat = sum(seen, [])
    assert set(flat) == set(range(11))
    assert len(flat) - len(set(flat)) == 1  # one index repeated to pad 11 to 12


@pytest.mark.slow  # two torchrun processes
def test_torchrun_two_gloo_processes(tmp_path):
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    ddp = run_convlab(FLAGS, tmp_path, launcher)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1  # only rank 0 writes
    assert ddp.stdout.count("run folder:") == 1 and ddp.stdout.count("epoch 6/6") == 1
    assert "distributed: 2 processes, 647 training images each per epoch (gloo)" in ddp.stdout
    distributed_accuracy = json.loads((folders[0] / "metrics.json").read_text())["accuracy"]

    single = run_convlab(FLAGS + ["--out", str(tmp_path / "single")], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    single_accuracy = json.loads((tmp_path / "single" / "metrics.json").read_text())["accuracy"]
    # Two ranks take half the steps per epoch (twice the global batch): close, not identical.
    assert distributed_accuracy >= 0.9 and single_accuracy >= 0.9
    assert abs(distributed_accuracy - single_accuracy) <= 0.05


@pytest.mark.slow  # two torchrun processes
def test_torchrun_trains_a_detector_with_one_run_folder(tmp_path):
    """A detection run under torchrun: both ranks train their half, rank 0 alone writes, validation is mAP."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["train", "--data", "shapes", "--data-dir", str(tmp_path / "data"), "--epochs", "2", "--quiet",
            "--threads", "1", "--out", str(tmp_path / "run")]
    (tmp_path / "data").mkdir()
    ddp = run_convlab(args, tmp_path, launcher)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "distributed: 2 processes, 87 training images each per epoch (gloo)" in ddp.stdout
    assert ddp.stdout.count("run folder:") == 1 and ddp.stdout.count("val_mAP") == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_images"] == 48 and 0 <= metrics["map"] <= metrics["map50"] <= 1
