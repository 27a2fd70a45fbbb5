"""The web app of `convlab serve`: the Predict, Runs and Learn pages and the routes only they call.

The server includes `page_router` (the page and its files, no token needed) and `router` (the routes only
the pages call). The pages also call the server's own `GET /api/models` and `POST /predict/{name}`. Every
error here is a 4xx JSON `{"error": "..."}` answered in this module, so it does not depend on the app's
exception handlers.
"""
from __future__ import annotations

import json
from pathlib import Path
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import ConvlabError
from ..insight.attribution import METHODS, Settings
from .learn import (MAX_BOXES, MAX_PADDING, MAX_UPSAMPLE_STRIDE, FieldError, conv_steps, nms_rounds,
                    upsample_stamps)
from .errors import RequestError, error
from .limits import lookup, open_upload
from .results import DetectionViews, ModelViews, NoTorchGraph, NotForDetectors
from .state import ServerState, State
from .uploads import read_images

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
# The browser may load nothing from outside this server; data: and blob: are the pages' own images.
CSP = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
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
NMS_BODY = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "properties": {
        # a box: x1 y1 x2 y2 score, and a class as a sixth number on every box for NMS per class
        "boxes": {"oneOf": [{"type": "string", "example": "10 10 50 90 0.9; 14 12 54 92 0.8"},
                            {"type": "array", "maxItems": MAX_BOXES, "items": {
                                "type": "array", "minItems": 5, "maxItems": 6, "items": {"type": "number"}}}]},
        "iou": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5}}}}}}}
UPSAMPLE_BODY = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False, "properties": {
        "input": MATRIX_SCHEMA, "kernel": MATRIX_SCHEMA,
        "stride": {"type": "integer", "minimum": 1, "maximum": MAX_UPSAMPLE_STRIDE, "default": 2},
        "padding": {"type": "integer", "minimum": 0, "maximum": MAX_PADDING, "default": 0}}}}}}}
IMAGE_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}},
    "responses": {"200": {"description": "the overlay", "content": {"image/png": {}}}}}


page_router = APIRouter()  # the page and its files: they hold no data, so the server serves them without --token
router = APIRouter()  # the routes only the pages call
STATIC_FILES = {path.name: path for path in sorted(STATIC.iterdir()) if path.suffix in MEDIA_TYPES}


@page_router.get("/", include_in_schema=False)
def index() -> Response:
    return _static_response(STATIC_FILES["index.html"])


@page_router.get("/static/{filename:path}", include_in_schema=False)
def static_file(filename: str) -> Response:
    if filename not in STATIC_FILES:
        return error(404, f"no static file {filename[:80]!r}")
    return _static_response(STATIC_FILES[filename])


def samples_query():
    return Query(DEFAULTS.samples, ge=1, le=MAX_SAMPLES, description="perturbed inputs for lime and kernelshap")


def steps_query():
    return Query(DEFAULTS.steps, ge=1, le=MAX_STEPS, description="integral steps of ig and ig-blur")


def view_of(state: ServerState, name: str) -> ModelViews | DetectionViews:
    """The views of the served model `name`, made on first use; names are looked up, never read as paths."""
    served = lookup(state.models, name)
    with state.views_lock:
        if name not in state.views:
            state.views[name] = served.views()
        return state.views[name]


async def overlay(name: str, request: Request, state: ServerState, draw, headers) -> Response:
    """One uploaded image -> draw(view, image) = (PNG, a, b) -> the PNG with headers(a, b); errors as 4xx JSON.
    Decoding and the model run in a worker thread, so the event loop keeps serving meanwhile."""
    try:
        view = view_of(state, name)
        data = await _one_upload(request, state.settings.max_images)
        max_pixels = state.settings.max_pixels
        png, first, second = await run_in_threadpool(lambda: draw(view, open_upload(data, max_pixels)))
    except (RequestError, ConvlabError) as err:  # NoTorchGraph and NotForDetectors are ConvlabErrors
        return _refusal(name, err)
    return Response(png, media_type="image/png", headers=headers(first, second))


@router.post("/api/gradcam/{name:path}", summary="Grad-CAM overlay (PNG) of one image for its predicted class",
             openapi_extra=IMAGE_BODY)
async def gradcam(name: str, request: Request, state: State) -> Response:
    def headers(index, layer):
        return {"X-Gradcam-Class-Index": str(index), "X-Gradcam-Layer": layer}

    return await overlay(name, request, state, lambda view, image: view.gradcam_png(image), headers)


@router.get("/api/attribute-methods", summary="the attribution methods of the Predict page's menu")
def attribute_methods() -> Response:
    return JSONResponse({"default": "gradcam", "methods": [
        {"name": key, "summary": cls.summary, "signed": cls.signed, "warning": cls.warning}
        for key, cls in METHODS.items()]})


@router.post("/api/attribute/{name:path}", summary="an attribution method's map (PNG overlay) of one image "
             "for its predicted class", openapi_extra=IMAGE_BODY)
async def attribution(name: str, request: Request, state: State, method: str = "gradcam",
                      samples: int = samples_query(), steps: int = steps_query()) -> Response:
    if method not in METHODS and name in state.models:  # an unknown model is the 404 overlay() gives
        return _unknown_method(method)
    settings = Settings(samples=samples, steps=steps)

    def headers(index, ms):
        return {"X-Attribution-Method": method, "X-Attribution-Class-Index": str(index),
                "X-Attribution-Ms": f"{ms:.1f}"}

    return await overlay(name, request, state,
                         lambda view, image: view.attribution_png(image, method, settings), headers)


@router.get("/api/mistakes/{name:path}", summary="the Runs page's mistakes drawn with an attribution method")
def mistakes(name: str, state: State, method: str = "gradcam",
             samples: int = samples_query(), steps: int = steps_query()) -> Response:
    try:
        view = view_of(state, name)
        if method not in METHODS:
            return _unknown_method(method)
        return JSONResponse(view.mistake_overlays(method, Settings(samples=samples, steps=steps)))
    except (RequestError, ConvlabError) as err:
        return _refusal(name, err)


@router.get("/api/runs/{name:path}", summary="a served run's results: metrics, curves, calibration, confusion, "
            "mistakes")
def run_results(name: str, state: State) -> Response:
    try:
        return JSONResponse(view_of(state, name).results())
    except (RequestError, ConvlabError) as err:
        return _refusal(name, err)


@router.post("/api/explain/conv", summary="every window of a convolution with its products and sum",
             openapi_extra=EXPLAIN_BODY)
async def explain_conv(request: Request) -> Response:
    return await _explained(request, conv_steps, '{"input": "1 0; 0 1", "kernel": "1"}')


@router.post("/api/explain/nms", summary="each round of non-maximum suppression, beside torchvision's result",
             openapi_extra=NMS_BODY)
async def explain_nms(request: Request) -> Response:
    return await _explained(request, nms_rounds, '{"boxes": "0 0 10 10 0.9; 1 1 11 11 0.8", "iou": 0.5}')


@router.post("/api/explain/upsample", summary="a transposed convolution stamp by stamp, beside torch's",
             openapi_extra=UPSAMPLE_BODY)
async def explain_upsample(request: Request) -> Response:
    return await _explained(request, upsample_stamps, '{"input": "1 2; 3 4", "kernel": "1 1 1; 1 1 1; 1 1 1"}')


async def _explained(request: Request, steps, example: str) -> Response:
    """A Learn page request: a small JSON body (empty: the worked example) -> steps(body) as JSON; 4xx naming
    the field otherwise."""
    raw = await request.body()
    if len(raw) > MAX_EXPLAIN_BYTES:
        return error(413, f"body: {len(raw):,} bytes, at most {MAX_EXPLAIN_BYTES:,} here")
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        return error(400, f"body: not JSON ({err}); send e.g. {example}")
    try:
        return JSONResponse(steps(body))
    except FieldError as err:
        return error(422, str(err))


def _refusal(name: str, err: RequestError | ConvlabError) -> Response:
    """The 4xx JSON answer of a page route for model `name` that raised `err`."""
    if isinstance(err, RequestError):
        return error(err.status, err.message, err.headers)
    if isinstance(err, (NoTorchGraph, NotForDetectors)):  # its message names the model already
        return error(422, str(err))
    return error(422, f"model {name!r}: {err}")


def _unknown_method(method: str) -> Response:
    return error(422, f"method {method[:40]!r}: not an attribution method; choose one of {', '.join(METHODS)}")


def _static_response(path: Path) -> Response:
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if path.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
    return Response(path.read_bytes(), media_type=MEDIA_TYPES[path.suffix], headers=headers)


async def _one_upload(request: Request, max_parts: int) -> bytes:
    """The bytes of the one image uploaded (a multipart part named `file`, or a raw image/* body)."""
    _, images = await read_images(request, max_parts)
    if len(images) != 1:
        raise RequestError(422, f"upload: expected one part named 'file' holding an image, got {len(images)}")
    return images[0]
