"""The server tests' segmentation run: tiny-unet trained for two epochs on a few generated shape masks, and
generated images it did not train on (tests/serve and tests/serve_web each train their own, once per module)."""
from __future__ import annotations

from pathlib import Path

import torch


def trained_mask_run(folder: Path):
    """A small segmentation run (~10 s on one thread): its weights do not depend on the machine's load."""
    from convlab import train
    from convlab.segmentation.synthetic import make_shape_masks

    make_shape_masks(folder / "data", n_train=64, n_test=8, size=64, seed=0)
    threads = torch.get_num_threads()
    try:
        return train(data=f"masks:{folder / 'data'}", model="tiny-unet", image_size=64, optimizer="adam", lr=3e-3,
                     epochs=6, batch_size=8, augment="none", val_fraction=0.1, threads=1,
                     out=str(folder / "run"), quiet=True)
    finally:
        torch.set_num_threads(threads)


def fresh_masks(folder: Path, count: int = 3) -> list:
    """`count` generated shape images with their true masks (another seed than the run's): [Masked]."""
    from convlab.segmentation.synthetic import make_shape_masks

    return make_shape_masks(folder, n_train=1, n_test=count, size=64, seed=4321).test
