"""Shared fixtures: small trained runs and generated image folders (tests never read outside the repo)."""
from __future__ import annotations

import shutil

import matplotlib.figure  # noqa: F401  (loaded, so runs draw their plots in-process: evaluate/plots.py)
import numpy as np
import pytest
import torch
from PIL import Image

pytest_plugins = ["pytester"]  # tests/test_fixtures.py runs small pytest sessions with this conftest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test's cache and downloads away from the user's ~/.cache/convlab."""
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path_factory.mktemp("convlab-home")))


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    """Put torch's process-wide thread count and deterministic mode back after each test.

    train(threads=...), set_threads and torch.set_num_threads change them for the whole process;
    without this a later test would run with whatever an earlier one left.
    """
    threads, deterministic = torch.get_num_threads(), _deterministic_mode()
    yield
    torch.set_num_threads(threads)
    if _deterministic_mode() != deterministic:  # only then: the call imports torch._inductor (~1 s) the first time
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def _deterministic_mode() -> tuple[bool, bool]:
    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A small digits run (tiny-cnn, 3 epochs) shared by the tests that only read it.

    Trained on one thread, so its weights do not depend on the machine's load (threads=0 would pick
    the idle cores), with torch's thread count put back after. Tests that write into a run use
    digits_run_copy; one that writes here is reported at the session's end.
    """
    from convlab import train

    out = tmp_path_factory.mktemp("runs") / "digits-tiny"
    threads = torch.get_num_threads()
    try:
        run = train(data="digits", model="tiny-cnn", epochs=3, threads=1, out=str(out), quiet=True)
    finally:
        torch.set_num_threads(threads)
    before = _listing(out)
    yield run
    assert _listing(out) == before, "a test wrote into the shared digits_run folder; give it digits_run_copy"


def _listing(folder):
    """{relative path: (size, modification time)} of everything under `folder`."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*"))}


@pytest.fixture
def digits_run_copy(digits_run, tmp_path):
    """A private copy of digits_run (folder and model), for tests that write into the run or change it."""
    from convlab import load_run

    return load_run(shutil.copytree(digits_run.path, tmp_path / digits_run.path.name))


@pytest.fixture
def make_image_folder():
    """Factory fixture: make_image_folder(root, classes=..., per_class=..., size=..., mode=...) -> root."""
    return write_image_folder


def write_image_folder(root, classes=("cat", "dog", "fox"), per_class=6, size=(12, 10), mode="RGB"):
    """Write `per_class` solid-ish PNGs per class into root/<class>/; each class has its own colour."""
    rng = np.random.default_rng(0)
    colours = [(220, 30, 30), (30, 200, 40), (40, 50, 210), (200, 200, 30)]
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colours[c % 4]) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(folder / f"{name}{i}.png")
    return root



SQUARE_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def write_colour_squares(root, count=240, size=24, seed=0):
    """count PNGs on a grey ground, each holding squares of one to three colours, and labels.csv (path,labels)
    listing the colours of each: a multi-label set a small CNN learns in a few epochs."""
    import csv

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    side = size // 3
    rows = []
    for i in range(count):
        pixels = np.full((size, size, 3), 128, np.uint8) + rng.integers(0, 20, (size, size, 3)).astype(np.uint8)
        names = [name for name in SQUARE_COLOURS if rng.random() < 0.45] or [str(rng.choice(list(SQUARE_COLOURS)))]
        for name in names:
            y, x = rng.integers(0, size - side, 2)
            pixels[y:y + side, x:x + side] = SQUARE_COLOURS[name]
        Image.fromarray(pixels).save(root / f"img{i:03d}.png")
        rows.append((f"img{i:03d}.png", " ".join(names)))
    with open(root / "labels.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "labels"])
        writer.writerows(rows)
    return root / "labels.csv"


@pytest.fixture(scope="session")
def multilabel_run(tmp_path_factory):
    """A small multi-label run (small-cnn, 5 epochs) on generated colour squares, shared by tests that only read
    it (on one thread, as digits_run)."""
    from convlab import train

    table = write_colour_squares(tmp_path_factory.mktemp("squares"))
    threads = torch.get_num_threads()
    try:
        run = train(data=f"csv:{table}", image_size=24, epochs=5, threads=1, val_fraction=0.2,
                    out=str(tmp_path_factory.mktemp("runs") / "squares"), quiet=True)
    finally:
        torch.set_num_threads(threads)
    return run
