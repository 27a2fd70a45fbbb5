"""Several worker processes on one listening socket (`convlab serve --workers N`): each loads the models and
runs its own batchers, so HTTP parsing, routing and decoding use every core instead of one event loop's.

uvicorn's supervisor starts the workers (spawned, not forked: torch's thread pools do not survive a fork)
and restarts one that dies; the workers read what to serve from WORKER_ENV. Metrics go through
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR), so /metrics from any worker sums them all.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import tempfile
from pathlib import Path

import torch

from ..training.performance import set_threads
from .app import create_app
from .metrics import MULTIPROC_ENV, log_access_to_stdout
from .served import load_served
from .settings import ServerSettings

WORKER_ENV = "CONVLAB_SERVE_WORKER"  # JSON: models, backend, settings, threads, access_log, tta


def serve_workers(sock: socket.socket, count: int, models: dict, backend: str, settings, threads: int,
                  access_log: bool, tta: str = "none") -> None:
    """Run `count` workers on `sock` until Ctrl-C (or SIGTERM) stops them all. models: {name: ServedModel}
    loaded here once (a bad model fails before any worker starts); the workers load them again, from the
    .onnx files exported here for backend onnx (one export, not one per worker)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    job = {"models": [[name, str(model.path), model.onnx_file and str(model.onnx_file)]
                      for name, model in models.items()], "backend": backend, "threads": threads,
           "settings": dataclasses.asdict(settings), "access_log": access_log, "tta": tta}
    with tempfile.TemporaryDirectory(prefix="convlab-serve-metrics-") as metrics_dir:
        saved = {key: os.environ.get(key) for key in (WORKER_ENV, MULTIPROC_ENV)}
        os.environ[WORKER_ENV], os.environ[MULTIPROC_ENV] = json.dumps(job), metrics_dir  # the workers inherit it
        try:
            config = uvicorn.Config(f"{__name__}:worker_app", factory=True, workers=count, log_level="warning",
                                    access_log=False, lifespan="on", timeout_graceful_shutdown=5)
            Multiprocess(config, sockets=[sock]).run()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def worker_app():
    """The app of one worker process (uvicorn's factory): the models and settings of WORKER_ENV."""
    job = json.loads(os.environ[WORKER_ENV])
    threads = set_threads(job["threads"], torch.device("cpu"))
    models = {name: load_served(name, Path(path), job["backend"], threads, onnx_file and Path(onnx_file), job["tta"])
              for name, path, onnx_file in job["models"]}
    if job["access_log"]:
        log_access_to_stdout()
    return create_app(models, ServerSettings(**job["settings"]), threads=threads, access_log=job["access_log"])
