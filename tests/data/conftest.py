"""Fixtures for tests/data: small datasets in the real file formats, and downloads kept on this machine."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import loopback

from convlab.data import download, sources
from convlab.data.cifar import write_cifar10
from convlab.data.idx import write_idx

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_mnist(folder: Path, n_train: int = 30, n_test: int = 12, gz: bool = True, seed: int = 0) -> dict:
    """Write the 4 MNIST files into folder; return {file name without .gz: array written}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / (name + ".gz" if gz else name), array)
    return arrays


def _write_cifar(folder: Path, n_train: int = 20, n_test: int = 6, seed: int = 0) -> dict:
    """Write a tiny CIFAR-10 under folder/cifar-10-batches-py; return the arrays and that folder."""
    rng = np.random.default_rng(seed)
    data = {
        "train_images": rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
        "test_labels": (np.arange(n_test) * 3) % 10,
        "classes": CIFAR_CLASSES,
    }
    data["batches"] = write_cifar10(folder, **data)
    return data


@pytest.fixture
def write_mnist():
    """write_mnist(folder, n_train=30, n_test=12, gz=True, seed=0) -> {name: array}."""
    return _write_mnist


@pytest.fixture
def write_cifar():
    """write_cifar(folder, n_train=20, n_test=6, seed=0) -> dict of arrays, classes and 'batches' folder."""
    return _write_cifar


def _closed_port_url() -> str:
    """A 127.0.0.1 URL where nothing listens, so a request is refused at once."""
    return loopback.closed_port_url() + "/"


@pytest.fixture
def closed_port_url():
    """closed_port_url() -> 'http://127.0.0.1:PORT/' with nothing listening."""
    return _closed_port_url


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Cache in tmp_path/home, no mirror, official URLs at closed local ports: nothing leaves the machine."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("CONVLAB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONVLAB_MIRROR", raising=False)
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    for attr in ("MNIST_URLS", "FASHION_MNIST_URLS", "CIFAR10_URLS"):
        monkeypatch.setattr(sources, attr, [_closed_port_url(), _closed_port_url()])
    return tmp_path / "home"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def fake_terminal():
    """fake_terminal() -> a context manager in which stderr is a StringIO that claims to be a terminal.

    Used inside the test body: pytest's capture swaps sys.stderr between setup and call.
    """
    @contextlib.contextmanager
    def terminal():
        stream = _Terminal()
        with contextlib.redirect_stderr(stream):
            yield stream

    return terminal
