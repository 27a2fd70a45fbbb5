"""Generated datasets are made by every torchrun rank at once: a file is replaced whole, never rewritten in
place, so a rank reading it while another rank writes it reads a complete image."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from convlab.detection.synthetic import make_shapes
from convlab.segmentation.synthetic import make_scans, make_shape_masks


def _inodes(folder):
    return {p.relative_to(folder): os.stat(p).st_ino for p in sorted(folder.rglob("*")) if p.is_file()}


def test_regenerated_shape_masks_replace_each_file_whole(tmp_path):
    make_shape_masks(tmp_path, 3, 2, size=32)
    before = _inodes(tmp_path)
    held = open(tmp_path / "train" / "masks" / "0000.png", "rb")  # a reader that opened the file first
    make_shape_masks(tmp_path, 3, 2, size=32)
    after = _inodes(tmp_path)
    assert before.keys() == after.keys()  # no temp files left behind
    assert all(before[name] != after[name] for name in before)
    old = np.array(Image.open(held))
    held.close()
    assert np.array_equal(old, np.array(Image.open(tmp_path / "train" / "masks" / "0000.png")))


def test_regenerated_scans_and_detection_shapes_replace_each_file_whole(tmp_path):
    for make in (lambda: make_scans(tmp_path / "scans", 2, 1, size=32),
                 lambda: make_shapes(tmp_path / "shapes", 3, 2, size=32)):
        make()
    before = _inodes(tmp_path)
    make_scans(tmp_path / "scans", 2, 1, size=32)
    make_shapes(tmp_path / "shapes", 3, 2, size=32)
    after = _inodes(tmp_path)
    assert before.keys() == after.keys()
    assert [name for name in before if before[name] == after[name]] == []
