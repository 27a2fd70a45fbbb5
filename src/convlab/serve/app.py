"""create_app: the FastAPI application serving models (OIP v2, the simple API, metrics, the web app)."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Mapping

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from ..version import __version__
from .batching import DeadlineExceeded, QueueFull
from .errors import error, error_response, internal_error
from .fastpath import FastPredict
from .limits import BodyLimit, RequestError, check_token
from .metrics import MetricsMiddleware
from .oip import oip_router
from .settings import Settings
from .simple import simple_router
from .webapp import page_router, web_router
from .state import ServerState



def create_app(models: Mapping, settings: Settings | None = None, threads: int = 1,
               access_log: bool = True) -> FastAPI:
    """models: {name: ServedModel}. The batchers start with the app's lifespan (uvicorn, or TestClient used
    as a context manager). threads: the model's intra-op threads (the CLI picks them as train does)."""
    settings = settings or Settings()
    models = dict(models)
    state = ServerState(models, settings, threads)

    @asynccontextmanager
    async def lifespan(_app):
        state.start()
        try:
            yield
        finally:
            state.stop()

    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN, and the server makes no request
    # outside itself; /openapi.json is there for tools (schemathesis, client generators)
    app = FastAPI(title="convlab serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Open Inference Protocol (v2) with Triton's binary tensor and classification "
                              "extensions, and a simple /predict API answering as `convlab predict --json`.")
    app.state.serve = state
    bearer = HTTPBearer(auto_error=False, description="--token, when the server was started with one")

    async def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        # async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop on every request
        check_token(settings.token, None if credentials is None
                    else f"{credentials.scheme} {credentials.credentials}")

    guarded = [Depends(authorized)] if settings.token is not None else []  # no dependency to solve per request
    health, oip = oip_router(models, state)
    app.include_router(health)
    app.include_router(oip, dependencies=guarded)
    simple = simple_router(models, state)
    app.include_router(simple, dependencies=guarded)

    @app.get("/metrics", summary="Prometheus metrics (text format)", dependencies=guarded,
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    async def metrics() -> Response:
        body, kind = state.metrics.render()
        return Response(body, media_type=kind)

    app.include_router(page_router())  # the page holds no data; it asks for the token when the API wants one
    app.include_router(web_router(models, settings.max_body_bytes, settings.max_pixels), dependencies=guarded)
    _add_error_handlers(app)
    predict_route = next(route for route in simple.routes if route.path == "/predict/{name}")
    app.add_middleware(FastPredict, models=models, state=state, route=predict_route)  # innermost: inside the limits
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, access_log=access_log)  # outermost: counts 413s
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every failure is {"error": "..."} with a status that fits; nothing answers with a traceback."""

    @app.exception_handler(RequestError)
    @app.exception_handler(QueueFull)
    @app.exception_handler(DeadlineExceeded)
    async def refused(_request: Request, err: Exception):
        return error_response(err)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException):
        return error(err.status_code, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception):
        return internal_error(err)
