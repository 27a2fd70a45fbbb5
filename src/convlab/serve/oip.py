"""Open Inference Protocol (KServe/Triton "v2") REST routes, with Triton's binary tensor data extension
(a JSON header of Inference-Header-Content-Length bytes, then raw tensors) and its classification extension
(an output with parameters.classification = k answers BYTES "score:index:label", the k best per image)."""
from __future__ import annotations

import base64
import binascii
import json
import struct
from typing import Any, Mapping

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..compress.export import INPUT as ONNX_INPUT
from ..version import __version__
from .errors import RequestError
from .limits import lookup
from .state import ServerState, State

IMAGE, INPUT = "image", "input"  # BYTES [-1] encoded images; FP32 [-1, C, H, W] already normalized
# `images` is the exported .onnx file's input name: a client written for Triton serving that file (input
# `images`, output `logits`) works here unchanged
INPUT_NAMES = (INPUT, ONNX_INPUT)
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data", "classification"]
VERSION = "1"


# -- the shapes of the JSON documents (for /openapi.json; requests are parsed by hand: binary bodies) -----
class Tensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data: bool, classification: int")


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="binary_data_output: bool")
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[Tensor]


INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": f"binary tensor extension: the JSON header ({HEADER_LENGTH} "
                                                f"bytes) then the raw tensors"}}}}


NOT_READY = {503: {"description": "not ready"}}
INFER = {"openapi_extra": INFER_BODY, "response_model": InferenceResponse,
         "responses": {200: {"content": {"application/octet-stream": {}}}}}
health = APIRouter(tags=["OIP v2"])  # needs no token
router = APIRouter(tags=["OIP v2"])


# every route is `async def`: FastAPI runs a plain `def` in a worker thread, a thread hop per request
@health.get("/v2/health/live", summary="the server is up")
async def live() -> dict:
    return {"live": True}


@health.get("/v2/health/ready", summary="every model is ready", responses=NOT_READY)
async def ready(state: State):
    if not state.ready():
        return JSONResponse({"ready": False, "error": "models are not loaded yet"}, status_code=503)
    return {"ready": True}


@router.get("/v2", summary="server metadata")
async def server_metadata() -> dict:
    return {"name": "convlab", "version": __version__, "extensions": EXTENSIONS}


@router.get("/v2/models/{name}", summary="model metadata")
@router.get("/v2/models/{name}/versions/{version}", summary="model metadata (this version)")
async def model_metadata(name: str, state: State, version: str | None = None) -> dict:
    model = _versioned(state.models, name, version)
    return {"name": model.name, "versions": [VERSION], "platform": _platform(model.backend), **model.oip_metadata()}


@router.get("/v2/models/{name}/ready", summary="model ready", responses=NOT_READY)
@router.get("/v2/models/{name}/versions/{version}/ready", summary="model ready (this version)", responses=NOT_READY)
async def model_ready(name: str, state: State, version: str | None = None) -> JSONResponse:
    model = _versioned(state.models, name, version)
    ready = state.batchers[model.name].running
    return JSONResponse({"name": model.name, "ready": ready}, status_code=200 if ready else 503)


@router.post("/v2/models/{name}/infer", summary="inference", **INFER)
@router.post("/v2/models/{name}/versions/{version}/infer", summary="inference (this version)", **INFER)
async def infer(name: str, request: Request, state: State, version: str | None = None) -> Response:
    model = _versioned(state.models, name, version)
    batcher = state.batchers[model.name]
    with batcher.coming():
        document, inputs = _parse_request(await request.body(), request.headers.get(HEADER_LENGTH))
        query = model.oip_query(_parameters(document))  # checked before any work
        batch = model.requested(await _input_batch(model, inputs, state), query)
    outputs = await batcher.run(batch, state.settings.timeout_s)
    return _response(model, document, model.oip_outputs(outputs, query))


def _versioned(models: Mapping, name: str, version: str | None):
    model = lookup(models, name)
    if version is not None and version != VERSION:
        raise RequestError(404, f"model {name!r} has no version {version[:20]!r}; its only version is {VERSION}")
    return model


def _platform(backend: str) -> str:
    return {"torch": "pytorch_libtorch", "onnx": "onnxruntime_onnx"}[backend]


# -- requests ------------------------------------------------------------------------------------------
def _parse_request(body: bytes, header_length: str | None) -> tuple[dict, list[tuple[dict, bytes | None]]]:
    """The JSON document and each input with its binary data (None when its data is in the JSON)."""
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise RequestError(400, f"{HEADER_LENGTH} {header_length[:20]!r} must be a byte count within the "
                                    f"body's {len(body)} bytes")
        head, binary = body[:int(header_length)], body[int(header_length):]
    else:
        head, binary = body, b""
    try:
        document = json.loads(head)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise RequestError(400, f"the inference request is not JSON ({err}); binary tensors need the "
                                f"{HEADER_LENGTH} header") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list) or not document["inputs"]:
        raise RequestError(400, 'the inference request needs "inputs": a non-empty list of tensors')
    inputs, offset = [], 0
    for tensor in document["inputs"]:
        if not isinstance(tensor, dict):
            raise RequestError(400, "each input must be an object with name, datatype, shape and data")
        size = (tensor.get("parameters") or {}).get("binary_data_size") if isinstance(
            tensor.get("parameters") or {}, dict) else None
        if size is None:
            inputs.append((tensor, None))
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise RequestError(400, f"input {str(tensor.get('name'))[:40]!r}: binary_data_size {size!r} does not "
                                    f"fit the {len(binary) - offset} binary bytes left in the body")
        inputs.append((tensor, binary[offset:offset + size]))
        offset += size
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset} bytes after the binary inputs that no input claims")
    return document, inputs


async def _input_batch(model, inputs: list[tuple[dict, bytes | None]], state: ServerState) -> np.ndarray:
    """The one input tensor -> (N, C, H, W): uint8 decoded images for `image`, float32 for `input`."""
    if len(inputs) != 1:
        raise RequestError(400, f"give one input, {INPUT!r} (FP32) or {IMAGE!r} (BYTES); got {len(inputs)}")
    tensor, binary = inputs[0]
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if not (isinstance(shape, list) and shape and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                      for v in shape)):
        raise RequestError(400, f"input {str(name)[:40]!r}: shape must be a list of non-negative integers")
    if name in INPUT_NAMES and model.float_input:
        _check_count(shape[0], state)
        return _float_input(model, tensor, binary, datatype, shape)
    if name == IMAGE:
        if datatype != "BYTES" or len(shape) != 1:
            raise RequestError(400, f"input {IMAGE!r} must be BYTES of shape [N], got {datatype} {shape}")
        images = _bytes_elements(tensor, binary, shape[0])
        _check_count(len(images), state)
        return await state.decode_all(model, images)
    takes = " or ".join(f"{i['name']!r} ({i['datatype']} {i['shape']})" for i in model.oip_metadata()["inputs"])
    raise RequestError(400, f"unknown input {str(name)[:40]!r}: model {model.name!r} takes {takes}")


def _check_count(count: int, state: ServerState) -> None:
    if count == 0:
        raise RequestError(400, "the request holds no image (shape [0])")
    if count > state.settings.max_images:
        raise RequestError(413, f"{count} images in one request; the server takes at most "
                                f"{state.settings.max_images}")


def _float_input(model, tensor: dict, binary: bytes | None, datatype, shape: list[int]) -> np.ndarray:
    expected = [*model.input_shape]
    if datatype != "FP32" or len(shape) != 4 or shape[1:] != expected:
        raise RequestError(400, f"input {INPUT!r} must be FP32 of shape [N, {', '.join(map(str, expected))}], "
                                f"got {datatype} {shape}")
    count = int(np.prod(shape))
    if binary is not None:
        if len(binary) != 4 * count:
            raise RequestError(400, f"input {INPUT!r}: {len(binary)} binary bytes, shape {shape} needs {4 * count}")
        values = np.frombuffer(binary, dtype="<f4")
    else:
        try:
            with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
                values = np.asarray(tensor.get("data"), dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as err:
            raise RequestError(400, f"input {INPUT!r}: data must be numbers ({str(err)[:80]})") from None
        if values.size != count:
            raise RequestError(400, f"input {INPUT!r}: {values.size} values, shape {shape} needs {count}")
    if not np.isfinite(values).all():
        raise RequestError(400, f"input {INPUT!r}: every value must be a finite number (no NaN or infinity)")
    return np.array(values.reshape(shape), dtype=np.float32)  # a writable copy (torch wants one)


def _bytes_elements(tensor: dict, binary: bytes | None, count: int) -> list[bytes]:
    """BYTES elements: binary as Triton serializes them (4-byte little-endian length, then the bytes), or in
    JSON as base64 strings (raw image bytes are not valid JSON text)."""
    if binary is not None:
        elements, offset = [], 0
        while offset < len(binary):
            if offset + 4 > len(binary):
                raise RequestError(400, f"input {IMAGE!r}: truncated element length at byte {offset}")
            (length,) = struct.unpack_from("<I", binary, offset)
            offset += 4
            if offset + length > len(binary):
                raise RequestError(400, f"input {IMAGE!r}: element of {length} bytes runs past the body")
            elements.append(binary[offset:offset + length])
            offset += length
    else:
        data = tensor.get("data")
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise RequestError(400, f"input {IMAGE!r}: JSON data must be a list of base64 strings (or send the "
                                    f"images as binary data)")
        try:
            elements = [base64.b64decode(item, validate=True) for item in data]
        except (binascii.Error, ValueError):
            raise RequestError(400, f"input {IMAGE!r}: an element is not valid base64") from None
    if len(elements) != count:
        raise RequestError(400, f"input {IMAGE!r}: {len(elements)} elements, shape [{count}] says {count}")
    return elements


# -- responses -----------------------------------------------------------------------------------------
def _parameters(document: dict) -> dict:
    """The request's parameters: binary_data_output, and what the model reads (a detector's conf and iou)."""
    return document.get("parameters") if isinstance(document.get("parameters"), dict) else {}


def _response(model, document: dict, values: dict[str, np.ndarray]) -> Response:
    requested = document.get("outputs")
    binary_default = _parameters(document).get("binary_data_output") is True
    if requested is None:
        requested = [{"name": name, "parameters": {"binary_data": binary_default}} for name in values]
    if not isinstance(requested, list):
        raise RequestError(400, '"outputs" must be a list of {"name", "parameters"}')
    outputs, chunks = [], []
    for entry in requested:
        if not isinstance(entry, dict) or entry.get("name") not in values:
            asked = entry.get("name") if isinstance(entry, dict) else entry
            raise RequestError(400, f"unknown output {str(asked)[:40]!r}; outputs are {', '.join(values)}")
        options = entry.get("parameters") or {}
        if not isinstance(options, dict):
            raise RequestError(400, f"output {entry['name']!r}: parameters must be an object")
        classification = options.get("classification")
        if classification is not None and entry["name"] not in model.classifiable:
            raise RequestError(400, f"output {entry['name']!r}: the classification parameter applies to a "
                                    f"classifier's outputs, not to model {model.name!r}'s ({model.task})")
        tensor, raw = _output(entry["name"], values[entry["name"]], model.labels, classification)
        if options.get("binary_data", binary_default) is True:
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = tensor.pop("_data")
        tensor.pop("_data", None)
        outputs.append(tensor)
    answer = {"model_name": model.name, "model_version": VERSION, "outputs": outputs}
    if isinstance(document.get("id"), str):
        answer["id"] = document["id"]
    header = json.dumps(answer).encode()
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(header))})


DATATYPES = {np.dtype(np.int64): ("INT64", "<i8"), np.dtype(np.uint8): ("UINT8", "u1")}  # and every float as FP32


def _output(name: str, value: np.ndarray, labels: list[str], classification) -> tuple[dict, bytes]:
    """One output tensor (JSON part with `_data`) and its binary form."""
    if classification is not None:
        return _classification(name, value, labels, classification)
    if value.dtype == object:  # strings: BYTES, serialized as Triton does
        return {"name": name, "datatype": "BYTES", "shape": list(value.shape), "_data": value.tolist()}, \
            _bytes_tensor(value.tolist())
    datatype, layout = DATATYPES.get(value.dtype, ("FP32", "<f4"))
    return ({"name": name, "datatype": datatype, "shape": list(value.shape), "_data": value.reshape(-1).tolist()},
            np.ascontiguousarray(value, dtype=layout).tobytes())


def _classification(name: str, value: np.ndarray, labels: list[str], classification) -> tuple[dict, bytes]:
    """Triton's classification extension: the k best of each row as BYTES "score:index:label"."""
    if not isinstance(classification, int) or isinstance(classification, bool) or classification < 1:
        raise RequestError(400, f"output {name!r}: classification must be a positive integer, got {classification!r}")
    k = min(classification, value.shape[1])
    order = np.argsort(-value, axis=1, kind="stable")[:, :k]
    rows = [[f"{value[i, j]:f}:{j}:{labels[j]}" for j in row] for i, row in enumerate(order)]
    flat = [text for row in rows for text in row]
    return {"name": name, "datatype": "BYTES", "shape": [len(rows), k], "_data": flat}, _bytes_tensor(flat)


def _bytes_tensor(texts: list[str]) -> bytes:
    """BYTES elements as Triton serializes them: each a 4-byte little-endian length, then its UTF-8 bytes."""
    return b"".join(struct.pack("<I", len(encoded)) + encoded for encoded in (text.encode() for text in texts))
