"""`convlab serve`: serve runs over HTTP (Open Inference Protocol v2, /predict, /metrics)."""
from __future__ import annotations

import argparse
import importlib
import os
import time

from ..errors import ConvlabError

# the modules of the serve extra; python-multipart is `python_multipart` since 0.0.13, `multipart` before
SERVE_MODULES = {"fastapi": ("fastapi",), "uvicorn": ("uvicorn",),
                 "python-multipart": ("python_multipart", "multipart"), "prometheus-client": ("prometheus_client",)}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_commands(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="serve runs over HTTP (Open Inference Protocol v2, /predict, web app)",
                        description="Serve run folders, compress variant folders or .onnx files over HTTP: the "
                                    "KServe/Triton Open Inference Protocol (v2) at /v2, /predict/NAME answering as "
                                    "'convlab predict --json', /metrics for Prometheus. Requests are batched per "
                                    "model. Needs the serve extra: pip install -e \".[serve]\" in the convlab "
                                    "folder.")
    sv.add_argument("models", metavar="[NAME=]PATH", nargs="+",
                    help="a run folder, a variant folder or a .onnx file; named by its folder (or file stem) "
                         "unless NAME= is given")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                                                        "only)")
    sv.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    sv.add_argument("--max-batch", type=int, default=32, metavar="N",
                    help="images per forward pass at most (default: 32; 1 turns batching off)")
    sv.add_argument("--max-delay-ms", type=float, default=2.0, metavar="MS",
                    help="how long a batch waits for more requests after its first (default: 2)")
    sv.add_argument("--max-queue", type=int, default=256, metavar="N",
                    help="requests waiting per model before new ones get 503 (default: 256)")
    sv.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                    help="what runs the model: torch, or onnxruntime (the run's model.onnx, else exported at "
                         "start); .onnx files always use onnxruntime (default: torch)")
    sv.add_argument("--tta", default="none", metavar="NAME",
                    help="classifiers: test-time augmentation for every request, the probabilities (and logits) "
                         "averaged over views of each image as predict --tta does: none, flip, five-crop "
                         "(default: none)")
    sv.add_argument("--threads", type=int, default=0, metavar="N",
                    help="the model's CPU threads; 0 picks the idle cores as 'train --threads 0' does (default: 0)")
    sv.add_argument("--workers", type=int, default=1, metavar="N",
                    help="worker processes on one port, each loading the models and batching its own requests "
                         "(HTTP parsing and decoding then use N cores); --threads 0 splits the idle cores "
                         "between them; 0: one per core (default: 1)")
    sv.add_argument("--token", default=os.environ.get("CONVLAB_SERVE_TOKEN"),
                    help="require 'Authorization: Bearer TOKEN' on every route but the health checks "
                         "(default: $CONVLAB_SERVE_TOKEN, else none)")
    sv.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="also answer requests whose Host header is NAME (any port), e.g. the name a reverse "
                         "proxy forwards; on a loopback --host only localhost, 127.0.0.1 and [::1] are answered "
                         "(a guard against DNS rebinding), elsewhere any name unless this is given (repeatable)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0, metavar="MB",
                    help="largest request body in MB (default: 10)")
    sv.add_argument("--max-megapixels", type=float, default=16.0, metavar="MP",
                    help="largest image width x height, checked before decoding (default: 16)")
    sv.add_argument("--timeout-s", type=float, default=30.0, metavar="S",
                    help="a request not run within S seconds gets 504 and is not run (default: 30)")
    sv.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True,
                    help="print one line per request (default: on)")
    sv.set_defaults(func=cmd_serve)


def check_serve_installed() -> None:
    missing = [package for package, modules in SERVE_MODULES.items() if not any(map(_importable, modules))]
    if missing:
        raise ConvlabError(f"convlab serve needs {', '.join(missing)}: pip install -e \".[serve]\" in the "
                           f"convlab folder")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def settings_from(args):
    from ..serve.limits import LOOPBACK_HOSTS  # lazy: start-up time
    from ..serve.settings import ServerSettings

    checks = [("--max-batch", args.max_batch, args.max_batch >= 1, "at least 1"),
              ("--max-delay-ms", args.max_delay_ms, 0 <= args.max_delay_ms <= 10_000, "between 0 and 10000"),
              ("--max-queue", args.max_queue, args.max_queue >= 1, "at least 1"),
              ("--threads", args.threads, args.threads >= 0, "0 (auto) or more"),
              ("--workers", args.workers, 0 <= args.workers <= 64, "between 0 (one per core) and 64"),
              ("--max-upload-mb", args.max_upload_mb, args.max_upload_mb > 0, "positive"),
              ("--max-megapixels", args.max_megapixels, args.max_megapixels > 0, "positive"),
              ("--timeout-s", args.timeout_s, args.timeout_s > 0, "positive"),
              ("--port", args.port, 0 <= args.port <= 65535, "between 0 and 65535")]
    for flag, value, ok, what in checks:
        if not ok:
            raise ConvlabError(f"{flag} must be {what}, got {value}")
    if args.token is not None and not args.token.strip():
        raise ConvlabError("--token is empty; give a secret or leave the option out")
    hosts = [*LOOPBACK_HOSTS, *args.allow_host] if args.host in LOOPBACK or args.allow_host else None
    return ServerSettings(max_batch=args.max_batch, max_delay_ms=args.max_delay_ms, max_queue=args.max_queue,
                          timeout_s=args.timeout_s, token=args.token, max_upload_mb=args.max_upload_mb,
                          max_pixels=int(args.max_megapixels * 1e6), allowed_hosts=hosts, threads=args.threads)


def cmd_serve(args) -> int:
    check_serve_installed()
    settings = settings_from(args)
    from ..models.tta import tta_named  # lazy: start-up time (torchvision)

    tta_named(args.tta)  # before listening, as the other flags
    import uvicorn

    from ..serve.served import parse_spec  # lazy: start-up time

    specs = [parse_spec(spec) for spec in args.models]
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise ConvlabError(f"two models are named {', '.join(twice)}; name them with NAME=PATH")
    sock = _listen(args.host, args.port)  # before loading: a port in use fails at once
    try:
        workers = args.workers or os.cpu_count() or 1
        models, threads = _load_models(specs, settings, args, workers)
        names = list(models)
        host, port = sock.getsockname()[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        if args.host not in LOOPBACK and settings.token is None:
            print(f"warning: listening on {args.host} without --token: anyone who can reach this machine can use "
                  f"the models", flush=True)
        each = f" in each of {workers} worker processes" if workers > 1 else ""
        print(f"serving {', '.join(names)} at {url} (OIP v2 at {url}/v2, API at {url}/openapi.json; "
              f"{threads} model thread{'s' * (threads > 1)}{each}; Ctrl-C stops)", flush=True)
        if workers > 1:
            from ..serve.workers import serve_workers  # lazy: start-up time

            serve_workers(sock, workers, models, args.backend, settings, threads, args.access_log, args.tta)
        else:
            from ..serve.app import create_app  # lazy: start-up time

            _log_access(args.access_log)
            app = create_app(models, settings, threads=threads, access_log=args.access_log)
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                                   timeout_graceful_shutdown=5))
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    print("stopped", flush=True)
    return 0


def _load_models(specs, settings, args, workers: int):
    """Load every model (a progress line each); ({name: ServedModel}, model threads of each worker)."""
    import torch

    from ..serve.served import load_served  # lazy: start-up time
    from ..training.performance import auto_threads, set_threads  # lazy: start-up time

    threads = set_threads(settings.threads or max(1, auto_threads() // workers), torch.device("cpu"))
    models = {}
    for name, path in specs:
        start = time.perf_counter()
        model = load_served(name, path, args.backend, threads, tta=args.tta)
        models[name] = model
        channels, height, width = model.input_shape
        tta = f", --tta {args.tta}" if args.tta != "none" else ""
        print(f"loaded {name} from {path} ({model.backend}, {len(model.labels)} classes, "
              f"{channels}x{height}x{width}{tta}) in {time.perf_counter() - start:.1f}s", flush=True)
    return models, threads


def _listen(host: str, port: int):
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ConvlabError(f"--host {host}: not an address of this machine ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise ConvlabError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _log_access(enabled: bool) -> None:
    if enabled:
        from ..serve.metrics import log_access_to_stdout  # lazy: start-up time

        log_access_to_stdout()
