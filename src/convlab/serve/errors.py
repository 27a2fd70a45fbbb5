"""The refusals of the server and their one JSON answer, {"error": "..."} with the status that fits (for the
app's exception handlers, the web app's routes, the hot path and the ASGI limits alike)."""
from __future__ import annotations

import logging

from fastapi.responses import JSONResponse

from .batching import DeadlineExceeded, QueueFull

LOG = logging.getLogger("convlab.serve")
RETRY_AFTER_S = 1


class RequestError(Exception):
    """A bad request: answered with `status` and {"error": message}, never a traceback."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The one builder of the error body (a JSONResponse is also an ASGI app, for the middlewares)."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def error_response(err: Exception) -> JSONResponse | None:
    """The answer to a request that raised `err`, or None for an unexpected error (answered 500)."""
    if isinstance(err, RequestError):
        return error(err.status, err.message, err.headers)
    if isinstance(err, QueueFull):
        return error(503, str(err), {"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(err, DeadlineExceeded):
        return error(504, str(err))
    return None


def internal_error(err: Exception) -> JSONResponse:
    """500, logged with its traceback here; the client gets one line."""
    LOG.exception("internal error", exc_info=err)
    return error(500, f"internal error ({type(err).__name__}); the server keeps serving")
