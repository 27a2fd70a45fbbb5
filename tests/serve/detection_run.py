"""The server tests' detection run: the shapes recipe (the tiny detector on generated 64x64 shapes), trained
once per test session whichever test folder asks first (tests/serve and tests/serve_web share it)."""
from __future__ import annotations

from pathlib import Path

import torch

_TRAINED: dict = {}


def trained_shapes_run(tmp_path_factory):
    """The run (the recipe's epochs, ~20 s), trained on one thread (its weights do not depend on the machine's
    load) on first use, its generated data in a temporary folder."""
    if "run" not in _TRAINED:
        from convlab import train

        out = tmp_path_factory.mktemp("runs") / "shapes"
        home = tmp_path_factory.mktemp("shapes-data")
        threads = torch.get_num_threads()
        try:
            _TRAINED["run"] = train(data="shapes", data_dir=str(home), threads=1, out=str(out), quiet=True)
        finally:
            torch.set_num_threads(threads)
    return _TRAINED["run"]


def fresh_shapes(folder: Path, count: int = 6) -> list[Path]:
    """`count` generated shapes images (another seed than the recipe's) as PNG files."""
    from convlab.detection.synthetic import make_shapes

    found = make_shapes(folder, n_train=1, n_test=count, size=64, seed=4321, negatives=0.0)
    return [Path(item.path) for item in found.test]
