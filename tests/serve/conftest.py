"""Fixtures of the server tests: the shared digits run served, its test images as PNG files, a running server."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from loopback import closed_port_url  # noqa: E402

COUNT = 12  # test images written as PNG files


def png_bytes(pixels: np.ndarray) -> bytes:
    """(1, H, W) or (3, H, W) uint8 -> PNG bytes."""
    array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def digit_pngs(digits_run, tmp_path_factory) -> list[Path]:
    """The first test images of digits_run as PNG files (8x8 grayscale)."""
    folder = tmp_path_factory.mktemp("digit-pngs")
    paths = []
    for i, pixels in enumerate(digits_run.test_data().images[:COUNT]):
        path = folder / f"digit{i:02d}.png"
        path.write_bytes(png_bytes(pixels))
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def served(digits_run):
    from convlab.serve.served import load_served

    return load_served("digits", digits_run.path)


@pytest.fixture
def make_client(served):
    """make_client(**settings) -> a started TestClient (batchers running) over the digits model."""
    from fastapi.testclient import TestClient

    from convlab.serve.app import create_app
    from convlab.serve.settings import ServerSettings

    clients = []

    def make(models=None, **settings):
        client = TestClient(create_app(models or {"digits": served}, ServerSettings(**settings), access_log=False))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@contextmanager
def running_server(*args: str, timeout: float = 60.0):
    """`convlab serve ARGS` on a free 127.0.0.1 port in a child process; yields (url, process); Ctrl-C at the end."""
    url = closed_port_url()
    port = url.rsplit(":", 1)[1]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "convlab", "serve", *args, "--port", port],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait_ready(url, process, timeout)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(subprocess.signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"convlab serve exited with {process.returncode}: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"convlab serve did not get ready within {timeout} s")


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory):
    """The small detection run of these tests and the web app's (trained once per session)."""
    from .detection_run import trained_shapes_run

    return trained_shapes_run(tmp_path_factory)


@pytest.fixture(scope="session")
def shapes_pngs(tmp_path_factory) -> list[Path]:
    """Generated shapes images (64x64 RGB PNG, squares, discs and triangles) that the run did not train on."""
    from .detection_run import fresh_shapes

    return fresh_shapes(tmp_path_factory.mktemp("shapes-pngs"))


@pytest.fixture(scope="session")
def served_shapes(shapes_run):
    from convlab.serve.served import load_served

    return load_served("shapes", shapes_run.path)


@pytest.fixture
def detector_client(make_client, served_shapes, served):
    """make(**settings) -> a started TestClient over the shapes detector ('shapes') beside the digits classifier."""
    return lambda **settings: make_client({"shapes": served_shapes, "digits": served}, **settings)
