"""The simple API: POST /predict/{name} answers what `convlab predict --json` prints for the same images;
GET /api/models lists the models with labels, input shape and test metrics."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from ..run import top_predictions
from .limits import lookup
from .state import State
from .uploads import read_images

PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}

router = APIRouter(tags=["simple"])


# every route is `async def`: FastAPI runs a plain `def` in a worker thread, a thread hop per request
@router.post("/predict/{name}", summary="classify images as `convlab predict --json` does",
             openapi_extra=PREDICT_BODY, response_class=JSONResponse,
             responses={200: {"description": 'predict --json\'s list: [{"path", "top": [{"label", "prob"}]}]'}})
async def predict(name: str, request: Request, state: State,
                  top_k: int = Query(5, ge=1, le=100000, description="as predict's --top-k")) -> JSONResponse:
    model = lookup(state.models, name)
    batcher = state.batchers[model.name]
    with batcher.coming():
        names, images = await read_images(request, state.settings.max_images)
        batch = await state.decode_all(model, images)
    _, probs = await batcher.run(batch, state.settings.timeout_s)
    return JSONResponse(top_predictions(probs, model.labels, names, top_k))  # as it is: no re-validation


@router.get("/api/models", summary="the served models: labels, input shape (C, H, W), test metrics")
async def list_models(state: State) -> list[dict]:
    return [{"name": model.name, "backend": model.backend, "labels": model.labels,
             "input_shape": list(model.input_shape), "metrics": model.metrics} for model in state.models.values()]
