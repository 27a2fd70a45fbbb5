"""Where a `convlab serve` request's time goes in the event loop: the ASGI app called in-process (no sockets,
no HTTP parsing) by 32 concurrent tasks posting one PNG to /predict, against the naive app of
serve_throughput.py, then cProfile of the convlab app's event-loop thread (the inference thread is not
profiled; time a C function spends waiting for the GIL counts as that function's).

    python benchmarks/serve_profile.py [--data-dir MNIST_DIR] [--model mnist-cnn] [--requests 3000] [--top 25]
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_throughput as bench  # noqa: E402 - the same run, PNGs and naive app as the throughput benchmark


def scope_for(body: bytes) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/predict/model", "raw_path": b"/predict/model", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"bench"), (b"content-type", b"image/png"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}


async def post_many(app, body: bytes, count: int) -> dict:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    sent = []

    async def send(message):
        sent.append(message)

    for _ in range(count):
        sent.clear()
        await app(scope_for(body), receive, send)
    return sent[0]


async def per_request_us(app, body: bytes, requests: int, profile: cProfile.Profile | None = None) -> float:
    await asyncio.gather(*(post_many(app, body, 10) for _ in range(32)))  # warm-up
    started = time.perf_counter()
    if profile:
        profile.enable()
    answers = await asyncio.gather(*(post_many(app, body, requests // 32) for _ in range(32)))
    if profile:
        profile.disable()
    assert all(answer["status"] == 200 for answer in answers), answers[0]
    return 1e6 * (time.perf_counter() - started) / (32 * (requests // 32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a folder with MNIST's IDX files: real digits (else random pixels)")
    parser.add_argument("--model", default="mnist-cnn", choices=sorted(bench.SHAPES))
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement (default: 3000)")
    parser.add_argument("--top", type=int, default=25, help="functions of the profile shown (default: 25)")
    args = parser.parse_args()
    import torch

    from convlab.serve.app import create_app
    from convlab.serve.served import load_served
    from convlab.serve.settings import ServerSettings

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="serve-profile-") as work:
        run_dir = bench.make_run(Path(work) / args.model, args.model)
        stored = np.load(bench.make_pngs(args.model, args.data_dir, Path(work) / "pngs.npz"))
        body = bytes(stored["data"][0][:stored["lengths"][0]])
        naive = bench.naive_app(str(run_dir), 1)
        app = create_app({"model": load_served("model", run_dir)}, ServerSettings(), threads=1, access_log=False)

        async def measure():
            async with app.router.lifespan_context(app):  # starts the batcher, as uvicorn would
                for _ in range(2):  # interleaved, twice
                    print(f"naive app: {await per_request_us(naive, body, args.requests):.0f} us a request, "
                          f"convlab app: {await per_request_us(app, body, args.requests):.0f} us a request")
                profile = cProfile.Profile()
                await per_request_us(app, body, args.requests, profile)
                return profile

        profile = asyncio.run(measure())
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).sort_stats("tottime")
    stats.print_stats(args.top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
