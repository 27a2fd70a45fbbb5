"""The hot path: POST /predict/NAME with one raw image body (and at most ?top_k=K), answered in an ASGI layer
before FastAPI's routing and parameter validation, which cost ~0.2 ms of a ~0.6 ms request on a 2-core CPU
(cProfile of the event loop, mnist-cnn). The answer is the route's own: the same decoding, batcher, result
list and JSON error bodies. Anything else (multipart, other parameters, unknown models, a wrong token) goes
on to the app, which answers it as before.
"""
from __future__ import annotations

from fastapi.responses import JSONResponse

from .errors import RequestError, error_response, internal_error
from .limits import check_token
from .state import ServerState

PREFIX = "/predict/"
MAX_TOP_K = 100000  # as the route's Query(le=...)


class FastPredict:
    def __init__(self, app, state: ServerState, route):
        self.app, self.state, self.route = app, state, route

    async def __call__(self, scope, receive, send):
        model = self._model(scope)
        query = _query(scope["query_string"]) if model is not None else None
        if query is None or not self._image_body(scope):
            return await self.app(scope, receive, send)
        scope["route"] = self.route  # what the metrics label the request with, as when routed
        try:
            response = await self._predict(model, receive, query)
        except Exception as err:  # noqa: BLE001 - every failure gets the app's JSON error, never a traceback
            response = error_response(err) or internal_error(err)
        await response(scope, receive, send)

    def _model(self, scope):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(PREFIX):
            return None
        return self.state.models.get(scope["path"][len(PREFIX):])

    def _image_body(self, scope) -> bool:
        """A raw image/* body, and the token right when the server has one (else the app answers 401)."""
        kind = authorization = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                kind = value
            elif key == b"authorization":
                authorization = value
        if kind is None or not kind.split(b";")[0].strip().lower().startswith(b"image/"):
            return False
        if self.state.settings.token is not None:
            try:
                check_token(self.state.settings.token, authorization and authorization.decode("latin-1"))
            except RequestError:
                return False
        return True

    async def _predict(self, model, receive, query: dict) -> JSONResponse:
        batcher = self.state.batchers[model.name]
        with batcher.coming():
            body = await _read_body(receive)
            batch = await self.state.decode_all(model, [body])
        outputs = await batcher.run(batch, self.state.settings.timeout_s)
        return JSONResponse(model.answer(outputs, [None], query))


def _query(query: bytes) -> dict | None:
    """The route's query for no query ({}: the defaults) or exactly top_k=K within the route's bounds; None for
    anything else (a detector's conf and iou included: the route parses and checks them)."""
    if not query:
        return {}
    key, _, value = query.partition(b"=")
    if key != b"top_k" or not value.isdigit() or not 1 <= int(value) <= MAX_TOP_K:
        return None
    return {"top_k": int(value)}


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise RequestError(400, "the client closed the connection before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
