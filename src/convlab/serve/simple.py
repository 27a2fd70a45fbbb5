"""The simple API: POST /predict/{name} answers what `convlab predict --json` prints for the same images;
GET /api/models lists the models with labels, input shape and test metrics."""
from __future__ import annotations

from typing import Mapping

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from ..run import top_predictions
from .limits import RequestError, lookup
from .state import ServerState

PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}


def simple_router(models: Mapping, state: ServerState) -> APIRouter:
    router = APIRouter(tags=["simple"])

    @router.post("/predict/{name}", summary="classify images as `convlab predict --json` does",
                 openapi_extra=PREDICT_BODY, response_class=JSONResponse,
                 responses={200: {"description": 'predict --json\'s list: [{"path", "top": [{"label", "prob"}]}]'}})
    async def predict(name: str, request: Request,
                      top_k: int = Query(5, ge=1, le=100000, description="as predict's --top-k")) -> JSONResponse:
        model = lookup(models, name)
        batcher = state.batchers[model.name]
        with batcher.coming():
            names, images = await _uploads(request, state.settings.max_images)
            batch = await state.decode_all(model, images)
        _, probs = await batcher.run(batch, state.settings.timeout_s)
        return JSONResponse(top_predictions(probs, model.labels, names, top_k))  # as it is: no re-validation

    @router.get("/api/models", summary="the served models: labels, input shape (C, H, W), test metrics")
    async def list_models() -> list[dict]:
        return [{"name": model.name, "backend": model.backend, "labels": model.labels,
                 "input_shape": list(model.input_shape), "metrics": model.metrics} for model in models.values()]

    return router


async def _uploads(request: Request, max_images: int) -> tuple[list[str | None], list[bytes]]:
    """(file names, encoded images) from multipart parts named `file`, or one raw body of type image/*."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind.startswith("image/"):
        return [None], [await request.body()]
    if kind != "multipart/form-data":
        raise RequestError(415, f"send images as multipart parts named 'file' or as one body of type image/*, "
                                f"not {kind[:60] or 'no Content-Type'}")
    try:
        form = await request.form(max_files=max_images, max_fields=max_images)
    except Exception as err:  # noqa: BLE001 - the multipart parser's errors (MultiPartException, ...)
        reason = str(getattr(err, "detail", err))  # starlette wraps the parser's error in an HTTPException
        if reason.startswith("Too many"):  # its words for max_files / max_fields
            raise RequestError(413, f"more than {max_images} parts in one request ({reason})") from None
        raise RequestError(400, f"malformed multipart body ({reason[:120] or type(err).__name__})") from None
    try:
        parts = form.getlist("file")
        if not parts:
            raise RequestError(422, "no part named 'file': send each image as a multipart part named 'file'")
        names, images = [], []
        for part in parts:
            if isinstance(part, str):
                raise RequestError(422, "the part 'file' must be a file upload, not a text field")
            names.append(part.filename)
            images.append(await part.read())
        return names, images
    finally:
        await form.close()
