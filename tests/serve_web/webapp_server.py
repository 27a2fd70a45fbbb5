"""The web app's test server: the real `convlab serve` application (create_app) over models loaded as
`convlab serve` loads them, so the pages are tested against the routes they will meet."""
from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from PIL import Image

from convlab.serve.app import create_app
from convlab.serve.served import ServedModel, load_served
from convlab.serve.settings import ServerSettings


def served(name: str, path: Path) -> ServedModel:
    return load_served(name, Path(path))


def make_app(models: dict[str, ServedModel], token: str | None = None, **settings) -> FastAPI:
    """With `token`: every route but the page, its files and the health checks wants `Bearer TOKEN`."""
    return create_app(models, ServerSettings(token=token, **settings), access_log=False)


def png_bytes(pixels) -> bytes:
    """(H, W) or (H, W, 3) uint8 -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def live_server(app: FastAPI):
    """Serve `app` with uvicorn on 127.0.0.1 in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
