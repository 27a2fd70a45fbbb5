"""The test app of the web app: FastAPI + web_router + stand-ins of the server's /api/models and /predict.

The stand-ins answer as `convlab serve` does (built from Run.predict, as `convlab predict --json` is), so
the pages can be tested without the server core. They live here, not in the package.
"""
from __future__ import annotations

import io
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from convlab.compress.load import load_variant
from convlab.serve.webapp import web_router


@dataclass
class ServedModel:
    """What the server hands web_router for each model."""

    name: str
    path: Path
    labels: list[str]
    input_shape: tuple[int, int, int]
    metrics: dict | None


def served(name: str, path: Path) -> ServedModel:
    run = load_variant(path)
    shape = (run.preprocess.channels, *run.preprocess.size)
    return ServedModel(name, Path(path), list(run.classes), shape, run.metrics)


def make_app(models: dict[str, ServedModel], token: str | None = None) -> FastAPI:
    """With `token`: every route but the page and its files wants `Authorization: Bearer TOKEN`."""
    app = FastAPI()
    app.include_router(web_router(models))
    runs = {}

    @app.middleware("http")
    async def bearer_token(request: Request, call_next):
        page = request.url.path == "/" or request.url.path.startswith("/static/")
        if token and not page and request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        return await call_next(request)

    @app.get("/api/models")
    def list_models():
        return [{"name": m.name, "labels": m.labels, "input_shape": list(m.input_shape), "metrics": m.metrics}
                for m in models.values()]

    @app.post("/predict/{name}")
    async def predict(name: str, request: Request, top_k: int = 5):
        if name not in models:
            return JSONResponse({"error": f"no model named {name!r}"}, status_code=404)
        form = await request.form()
        parts = form.getlist("file")
        images = [Image.open(io.BytesIO(await part.read())) for part in parts]
        run = runs.setdefault(name, load_variant(models[name].path))
        results = run.predict(images, top_k=top_k)
        for result, part in zip(results, parts):
            result["path"] = part.filename  # what `convlab predict --json` shows as the image's path
        return results

    return app


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
