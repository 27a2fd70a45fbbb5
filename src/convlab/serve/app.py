"""create_app: the FastAPI application serving models (OIP v2, the simple API, metrics, the web app)."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Mapping

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from ..version import __version__
from . import oip, simple, webapp
from .batching import DeadlineExceeded, QueueFull
from .errors import RequestError, error, error_response, internal_error
from .fastpath import FastPredict
from .limits import BodyLimit, HostCheck, check_token
from .metrics import MetricsMiddleware
from .settings import ServerSettings
from .state import ServerState, State

bearer = HTTPBearer(auto_error=False, description="--token, when the server was started with one")
metrics_router = APIRouter()


# async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop on every request
async def authorized(state: State, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    check_token(state.settings.token, None if credentials is None
                else f"{credentials.scheme} {credentials.credentials}")


@metrics_router.get("/metrics", summary="Prometheus metrics (text format)", response_class=Response,
                    responses={200: {"content": {"text/plain": {}}}})
async def metrics(state: State) -> Response:
    body, kind = state.metrics.render()
    return Response(body, media_type=kind)


# Every failure is {"error": "..."} with a status that fits; nothing answers with a traceback.
async def refused(_request: Request, err: Exception):
    return error_response(err)


async def http_error(_request: Request, err: HTTPException):
    return error(err.status_code, str(err.detail), getattr(err, "headers", None))


async def invalid(_request: Request, err: RequestValidationError):
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return error(422, f"{where}: {first.get('msg', 'invalid request')}")


async def unexpected(_request: Request, err: Exception):
    return internal_error(err)


EXCEPTION_HANDLERS = {RequestError: refused, QueueFull: refused, DeadlineExceeded: refused, HTTPException: http_error,
                      RequestValidationError: invalid, Exception: unexpected}


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.serve.start()
    try:
        yield
    finally:
        app.state.serve.stop()


def create_app(models: Mapping, settings: ServerSettings | None = None, threads: int = 1,
               access_log: bool = True) -> FastAPI:
    """models: {name: ServedModel}. The batchers start with the app's lifespan (uvicorn, or TestClient used
    as a context manager). threads: the model's intra-op threads (the CLI picks them as train does)."""
    state = ServerState(models, settings or ServerSettings(), threads)
    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN, and the server makes no request
    # outside itself; /openapi.json is there for tools (schemathesis, client generators)
    app = FastAPI(title="convlab serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  exception_handlers=EXCEPTION_HANDLERS,
                  description="Open Inference Protocol (v2) with Triton's binary tensor and classification "
                              "extensions, and a simple /predict API answering as `convlab predict --json`.")
    app.state.serve = state
    # no dependency to solve per request when the server has no token
    guarded = [Depends(authorized)] if state.settings.token is not None else []
    app.include_router(oip.health)
    for router in (oip.router, simple.router, metrics_router):
        app.include_router(router, dependencies=guarded)
    app.include_router(webapp.page_router)  # the page holds no data; it asks for the token when the API wants one
    app.include_router(webapp.router, dependencies=guarded)
    predict = next(route for route in simple.router.routes if route.endpoint is simple.predict)
    app.add_middleware(FastPredict, state=state, route=predict)  # innermost: inside the limits
    app.add_middleware(BodyLimit, max_bytes=state.settings.max_body_bytes)
    if state.settings.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed_hosts=state.settings.allowed_hosts)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, access_log=access_log)  # outermost: counts 413s
    return app
