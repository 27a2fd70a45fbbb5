"""A segmentation run under torchrun with 2 CPU processes (gloo): one run folder, validation by mIoU."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch build has no gloo backend")

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow  # two torchrun processes
def test_torchrun_trains_a_segmenter_with_one_run_folder(tmp_path):
    """Both ranks train their half of the shapes, rank 0 alone writes, the best epoch is picked by val_miou."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    args = ["train", "--data", "shape-masks", "--data-dir", str(tmp_path / "data"), "--epochs", "2", "--quiet",
            "--threads", "1", "--out", str(tmp_path / "run")]
    (tmp_path / "data").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    ddp = subprocess.run([sys.executable, *launcher, "-m", "convlab", *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "distributed: 2 processes, 87 training images each per epoch (gloo)" in ddp.stdout  # ceil(173 / 2)
    assert ddp.stdout.count("run folder:") == 1
    assert [path.name for path in tmp_path.iterdir() if path.name not in ("data", "run")] == []  # rank 1 wrote none
    with open(tmp_path / "run" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(0 <= float(row["val_miou"]) <= 1 for row in rows)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["num_images"] == 48 and 0 <= metrics["miou"] <= 1
