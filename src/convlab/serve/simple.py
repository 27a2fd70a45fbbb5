"""The simple API: POST /predict/{name} answers what `convlab predict --json` prints for the same images (a
classifier's top classes, a detector's boxes, a segmenter's masks); GET /api/models lists the models with
their task, labels, input shape and test metrics."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from ..detection.run import CONF, IOU
from ..segmentation.run import OVERLAP
from ..segmentation.tiles import MIN_TILE
from .limits import lookup
from .segment import MAX_TILE
from .state import State
from .uploads import read_images

PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}

router = APIRouter(tags=["simple"])


# every route is `async def`: FastAPI runs a plain `def` in a worker thread, a thread hop per request
@router.post("/predict/{name}", summary="classify images, find their objects or segment them, as `convlab predict "
             "--json` does",
             openapi_extra=PREDICT_BODY, response_class=JSONResponse,
             responses={200: {"description": 'predict --json\'s list: a classifier\'s [{"path", "top": [{"label", '
                                             '"prob"}]}], a detector\'s [{"path", "width", "height", "boxes": '
                                             '[{"label", "score", "box": [x1, y1, x2, y2]}]}], a segmenter\'s '
                                             '[{"path", "width", "height", "pixels": {class: count}, "mask"}]'}})
async def predict(name: str, request: Request, state: State,
                  top_k: int = Query(5, ge=1, le=100000, description="a classifier's: as predict's --top-k"),
                  conf: float = Query(CONF, ge=0, le=1, description="a detector's: as predict's --conf"),
                  iou: float = Query(IOU, ge=0, le=1, description="a detector's: as predict's --iou"),
                  mask: Literal["png", "rle"] = Query("png", description="a segmenter's: each mask as a palette "
                                                      "PNG (base64) or a COCO RLE per class"),
                  tile: int | None = Query(None, ge=MIN_TILE, le=MAX_TILE, description="a segmenter's: as predict's "
                                           "--tile (sliding windows of this side; none: one whole pass)"),
                  overlap: float = Query(OVERLAP, ge=0, lt=1, description="a segmenter's: as predict's --overlap")
                  ) -> JSONResponse:
    model = lookup(state.models, name)
    batcher = state.batchers[model.name]
    with batcher.coming():
        names, images = await read_images(request, state.settings.max_images)
        query = {"top_k": top_k, "conf": conf, "iou": iou, "mask": mask, "tile": tile, "overlap": overlap}
        batch = model.requested(await state.decode_all(model, images), query)
    outputs = await batcher.run(batch, state.settings.timeout_s)
    return JSONResponse(model.answer(outputs, names, query))  # as it is: no re-validation


@router.get("/api/models", summary="the served models: task, labels, input shape (C, H, W), test metrics")
async def list_models(state: State) -> list[dict]:
    return [model.describe() for model in state.models.values()]
