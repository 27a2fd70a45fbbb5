"""Prometheus metrics of one server (its own registry, so two apps in one process do not mix): requests
and errors by route and status code, latency, batch sizes, queue depth; and one access-log line a request."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

ACCESS_LOG = logging.getLogger("convlab.serve.access")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode: one file per process
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess() -> bool:
    """Whether this process is one of several workers (prometheus_client's multiprocess mode is on)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def _forget_dead_workers(folder: str) -> None:
    """A worker that was killed (SIGKILL, the OOM killer) never ran close(): its live gauges (the queue
    depth it last had) leave the sum here, at the next scrape, instead of staying in it for good."""
    for file in Path(folder).glob("gauge_live*_*.db"):
        pid = file.stem.rsplit("_", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            mark_process_dead(int(pid), folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class ServerMetrics:
    """With several workers every value lives in a file of PROMETHEUS_MULTIPROC_DIR and render() sums the
    workers' files; the queue depth is then set as it changes (a gauge of the live workers, summed)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.shared = multiprocess()
        self.requests = Counter("convlab_requests", "HTTP requests by route and status code",
                                ["method", "route", "code"], registry=self.registry)
        self.errors = Counter("convlab_request_errors", "HTTP requests answered 4xx or 5xx, by route and code",
                              ["method", "route", "code"], registry=self.registry)
        self.latency = Histogram("convlab_request_seconds", "time from request to response, by route",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("convlab_batch_size", "images per forward pass, by model", ["model"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("convlab_queue_depth", "requests waiting for the model, by model", ["model"],
                                 registry=self.registry, multiprocess_mode="livesum")

    def watch_queue(self, model: str, depth) -> None:
        """Report `depth()` as the queue depth of `model` whenever metrics are scraped (one process)."""
        if not self.shared:
            self.queue_depth.labels(model).set_function(depth)

    def depth_observer(self, model: str):
        """With several workers: a callback the batcher calls with its queue depth as it changes, else None."""
        return self.queue_depth.labels(model).set if self.shared else None

    def batch_observer(self, model: str):
        child = self.batch_size.labels(model)
        return child.observe

    def close(self) -> None:
        """A worker stopping: its queue depth leaves the live workers' sum."""
        if self.shared:
            mark_process_dead(os.getpid())

    def render(self) -> tuple[bytes, str]:
        if not self.shared:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        _forget_dead_workers(os.environ[MULTIPROC_ENV])
        every = CollectorRegistry()
        MultiProcessCollector(every)
        return generate_latest(every), CONTENT_TYPE_LATEST


def log_access_to_stdout() -> None:
    """Print the access log's lines on stdout (once per process)."""
    logger = logging.getLogger(ACCESS_LOG.name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        # with several workers, the process id says which one answered
        handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(message)s" if multiprocess()
                                               else "%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class MetricsMiddleware:
    """ASGI middleware counting every request by its route template (not its URL: bounded label values)."""

    def __init__(self, app, metrics: ServerMetrics, access_log: bool = True):
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_counted(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method, seconds = scope["method"], time.perf_counter() - start
            self.metrics.requests.labels(method, route, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(seconds)
            if self.access_log:
                client = scope.get("client") or ("-", 0)
                ACCESS_LOG.info('%s "%s %s" %d %.1f ms', client[0], method, scope["path"], status, seconds * 1e3)
