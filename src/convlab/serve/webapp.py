"""The web app of `convlab serve`: the Predict, Runs and Learn pages and the routes only they call.

The server includes `page_router()` (the page and its files, no token needed) and `web_router(models)`.
The pages also call the server's own `GET /api/models` and `POST /predict/{name}`. Every error here is a
4xx JSON `{"error": "..."}` built in this module, so it does not depend on the app's exception handlers.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Mapping

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import ConvlabError
from ..insight.attribution import METHODS, Settings
from .learn import FieldError, conv_steps
from .limits import RequestError, lookup, open_upload
from .results import ModelViews, NoTorchGraph

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# The browser may load nothing from outside this server; data: and blob: are the pages' own images.
CSP = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the server passes --max-upload-mb and --max-megapixels
MAX_PIXELS = 40_000_000
MAX_EXPLAIN_BYTES = 64 * 1024
DEFAULTS = Settings()  # the attribution settings of `convlab attribute`; a request may lower or raise them
MAX_SAMPLES, MAX_STEPS = Settings.ranges["samples"][1], Settings.ranges["steps"][1]  # the CLI's and Python's too


# The request bodies in /openapi.json (the routes read them by hand, so every error is this module's JSON).
MATRIX_SCHEMA = {"oneOf": [{"type": "string", "example": "1 0 1; 0 1 0; 1 0 1"},
                           {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}]}
EXPLAIN_BODY = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "properties": {
        "input": MATRIX_SCHEMA, "kernel": MATRIX_SCHEMA,
        "stride": {"type": "integer", "minimum": 1, "maximum": 8, "default": 1},
        "padding": {"type": "integer", "minimum": 0, "maximum": 4, "default": 0},
        "mode": {"type": "string", "enum": ["correlation", "convolution"], "default": "correlation"}}}}}}}
IMAGE_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}},
    "responses": {"200": {"description": "the overlay", "content": {"image/png": {}}}}}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def page_router() -> APIRouter:
    """The page and its files: they hold no data, so the server serves them without --token."""
    router = APIRouter()
    static = {path.name: path for path in sorted(STATIC.iterdir()) if path.suffix in MEDIA_TYPES}

    @router.get("/", include_in_schema=False)
    def index() -> Response:
        return _static_response(static["index.html"])

    @router.get("/static/{filename:path}", include_in_schema=False)
    def static_file(filename: str) -> Response:
        if filename not in static:
            return error(404, f"no static file {filename[:80]!r}")
        return _static_response(static[filename])

    return router


def samples_query():
    return Query(DEFAULTS.samples, ge=1, le=MAX_SAMPLES, description="perturbed inputs for lime and kernelshap")


def steps_query():
    return Query(DEFAULTS.steps, ge=1, le=MAX_STEPS, description="integral steps of ig and ig-blur")


def web_router(models: Mapping[str, object], max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_pixels: int = MAX_PIXELS) -> APIRouter:
    """The routes only the pages call, for the served `models` (name -> object with .name, .path, .labels,
    .input_shape, .metrics); names are looked up in this mapping, never read as paths."""
    router = APIRouter()
    views: dict[str, ModelViews] = {}  # made on first use: the server may fill `models` after building the router
    views_lock = threading.Lock()

    def view_of(name: str) -> ModelViews:
        served = lookup(models, name)
        with views_lock:
            if name not in views:
                views[name] = ModelViews(name, served.path, served.metrics)
            return views[name]

    async def overlay(name: str, request: Request, draw, headers) -> Response:
        """One uploaded image -> draw(view, image) = (PNG, a, b) -> the PNG with headers(a, b); errors as 4xx JSON.
        Decoding and the model run in a worker thread, so the event loop keeps serving meanwhile."""
        try:
            view = view_of(name)
            data = await _one_upload(request, max_upload_bytes)
            png, first, second = await run_in_threadpool(lambda: draw(view, open_upload(data, max_pixels)))
        except (RequestError, ConvlabError) as err:  # NoTorchGraph is a ConvlabError
            return _refusal(name, err)
        return Response(png, media_type="image/png", headers=headers(first, second))

    @router.post("/api/gradcam/{name:path}", summary="Grad-CAM overlay (PNG) of one image for its predicted class",
                 openapi_extra=IMAGE_BODY)
    async def gradcam(name: str, request: Request) -> Response:
        def headers(index, layer):
            return {"X-Gradcam-Class-Index": str(index), "X-Gradcam-Layer": layer}

        return await overlay(name, request, lambda view, image: view.gradcam_png(image), headers)

    @router.get("/api/attribute-methods", summary="the attribution methods of the Predict page's menu")
    def attribute_methods() -> Response:
        return JSONResponse({"default": "gradcam", "methods": [
            {"name": key, "summary": cls.summary, "signed": cls.signed, "warning": cls.warning}
            for key, cls in METHODS.items()]})

    @router.post("/api/attribute/{name:path}", summary="an attribution method's map (PNG overlay) of one image "
                 "for its predicted class", openapi_extra=IMAGE_BODY)
    async def attribution(name: str, request: Request, method: str = "gradcam",
                          samples: int = samples_query(), steps: int = steps_query()) -> Response:
        if method not in METHODS and name in models:  # an unknown model is the 404 overlay() gives
            return _unknown_method(method)
        settings = Settings(samples=samples, steps=steps)

        def headers(index, ms):
            return {"X-Attribution-Method": method, "X-Attribution-Class-Index": str(index),
                    "X-Attribution-Ms": f"{ms:.1f}"}

        return await overlay(name, request, lambda view, image: view.attribution_png(image, method, settings),
                             headers)

    @router.get("/api/mistakes/{name:path}", summary="the Runs page's mistakes drawn with an attribution method")
    def mistakes(name: str, method: str = "gradcam",
                 samples: int = samples_query(), steps: int = steps_query()) -> Response:
        try:
            view = view_of(name)
            if method not in METHODS:
                return _unknown_method(method)
            return JSONResponse(view.mistake_overlays(method, Settings(samples=samples, steps=steps)))
        except (RequestError, ConvlabError) as err:
            return _refusal(name, err)

    @router.get("/api/runs/{name:path}", summary="a served run's results: metrics, curves, confusion, mistakes")
    def run_results(name: str) -> Response:
        try:
            return JSONResponse(view_of(name).results())
        except (RequestError, ConvlabError) as err:
            return _refusal(name, err)

    @router.post("/api/explain/conv", summary="every window of a convolution with its products and sum",
                 openapi_extra=EXPLAIN_BODY)
    async def explain_conv(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_EXPLAIN_BYTES:
            return error(413, f"body: {len(raw):,} bytes, at most {MAX_EXPLAIN_BYTES:,} here")
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            return error(400, f"body: not JSON ({err}); send e.g. {{\"input\": \"1 0; 0 1\", \"kernel\": \"1\"}}")
        try:
            return JSONResponse(conv_steps(body))
        except FieldError as err:
            return error(422, str(err))

    return router


def _refusal(name: str, err: RequestError | ConvlabError) -> Response:
    """The 4xx JSON answer of a page route for model `name` that raised `err`."""
    if isinstance(err, RequestError):
        return error(err.status, err.message)
    if isinstance(err, NoTorchGraph):  # its message names the model already
        return error(422, str(err))
    return error(422, f"model {name!r}: {err}")


def _unknown_method(method: str) -> Response:
    return error(422, f"method {method[:40]!r}: not an attribution method; choose one of {', '.join(METHODS)}")


def _static_response(path: Path) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
    return Response(path.read_bytes(), media_type=MEDIA_TYPES[path.suffix], headers=headers)


async def _one_upload(request: Request, max_bytes: int) -> bytes:
    """The bytes of the one multipart part named `file`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + 64 * 1024:  # room for the multipart framing
        raise RequestError(413, f"upload: {int(declared):,} bytes, at most {max_bytes:,}")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise RequestError(415, "upload: send the image as multipart/form-data with one part named 'file'")
    try:
        form = await request.form(max_files=2, max_fields=8)
    except Exception as err:  # noqa: BLE001 - multipart parsers raise their own error types
        raise RequestError(400, f"upload: the multipart body cannot be read ({err})") from None
    try:
        files = [part for part in form.getlist("file") if hasattr(part, "read")]
        if len(files) != 1:
            raise RequestError(422, f"upload: expected one part named 'file' holding an image, got {len(files)}")
        data = await files[0].read(max_bytes + 1)
    finally:
        await form.close()
    if len(data) > max_bytes:
        raise RequestError(413, f"upload: the image is over {max_bytes:,} bytes")
    return data
