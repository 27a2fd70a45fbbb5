"""The medical walk-through: 16-bit grayscale scans keep their range through training, a Dice loss finds the
lesions, and a scan larger than the model's input is segmented in tiles at its own resolution."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from convlab.pipeline import train
from convlab.segmentation.metrics import segmentation_metrics
from convlab.segmentation.synthetic import make_scans


@pytest.mark.slow
def test_sixteen_bit_scans_train_with_dice_and_a_large_scan_is_segmented_in_tiles(tmp_path):
    make_scans(tmp_path / "scans", 48, 8, size=64, seed=0, big=256)
    run = train(data=f"masks:{tmp_path / 'scans'}", model="tiny-unet", image_size=64, epochs=10, batch_size=8,
                lr=3e-3, loss="dice+ce", val_fraction=0.125, out=str(tmp_path / "run"), quiet=True, threads=1)
    assert run.preprocess.channels == 1  # gray scans train a one-channel model
    # the 16-bit range is kept: tissue of about 20,000 / 65,535, not clipped to 255 / 255
    assert 0.25 < run.preprocess.mean[0] < 0.4
    assert run.metrics["per_class_iou"]["lesion"] >= 0.6, run.metrics
    big = np.array(Image.open(tmp_path / "scans" / "big_scan.png"))
    truth = np.array(Image.open(tmp_path / "scans" / "big_scan_mask.png"))
    tiled = run.segment(big[..., None], 65535, tile=64, overlap=0.25)
    assert tiled.shape == (256, 256)
    scores = segmentation_metrics([truth], [tiled], run.classes)
    assert scores["per_class_iou"]["lesion"] >= 0.6, scores
    shrunk = segmentation_metrics([truth], [run.segment(big[..., None], 65535)], run.classes)
    # the whole-image pass shrinks the scan to the 64-pixel input and loses the small lesions' edges
    assert shrunk["per_class_iou"]["lesion"] < scores["per_class_iou"]["lesion"]
