"""Serving throughput and latency: a naive FastAPI server against `convlab serve`, closed-loop clients.

    python benchmarks/serve_throughput.py [--data-dir MNIST_DIR] [--models mnist-cnn,resnet18]
                                          [--requests 2000] [--requests-resnet18 N] [--concurrency 1,8,32]
                                          [--servers naive-fast,naive,batch1,default,workers2,onnx,...]
                                          [--wrk --seconds 5]

For each model (random weights: only speed is measured) the same pre-encoded PNGs (MNIST test digits when
--data-dir holds MNIST's IDX files, else random pixels; 224x224 RGB for resnet18) are posted by a
closed-loop client in a separate process to:
  (a) naive:    FastAPI, one endpoint that decodes the body and calls the model per request, under what
                `pip install fastapi uvicorn` gives (uvicorn's h11 parser, asyncio's loop);
  (a') naive-fast: the same app under httptools and uvloop (`pip install "uvicorn[standard]"`);
  (b) batch1:   convlab serve --max-batch 1;
  (c) default:  convlab serve (dynamic batching, --max-batch 32 --max-delay-ms 2);
  (c') workers2: convlab serve --workers 2 (each worker with --threads model threads);
  (d) onnx:     convlab serve --backend onnx; (d') onnx-workers2: with --workers 2;
convlab serve runs under httptools and uvloop when they are installed (the serve extra has them).
and (e) the model alone on batches of 32 decoded images (Run.predict_arrays in this process: the ceiling).
Every server gets the same model thread count (torch.set_num_threads, as `train --threads 0` picks it
once here, and OMP_NUM_THREADS / MKL_NUM_THREADS in its environment) and the raw PNG as the body of POST
/predict/NAME; the 'vs naive' column is against the first server (default: the naive app under httptools
and uvloop, the same HTTP stack as convlab serve). The servers run side by side; the points are
measured in rounds (each round: every concurrency, every server), and the table gives the medians over
rounds of req/s, p50 and p99 latency, and the CPU time per request of the server (all its processes,
from /proc) and of the client: on a machine where they share the cores, the sum bounds the rate.

With --wrk the load comes from wrk (one thread, one PNG, a fixed duration a point), a C client that leaves
the server more of the CPU. Otherwise the client is a small asyncio HTTP/1.1 loop over keep-alive connections rather than httpx or requests: on
a 2-core machine the client shares the CPU with the server, and those clients cost a millisecond of CPU
per request, which would be timed as the server's.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi import Request  # at module level: the route's annotation is resolved in this module's globals

HERE = Path(__file__).resolve()
SERVERS = ("naive-fast", "naive", "batch1", "default", "workers2", "onnx", "onnx-workers2")
LABELS = {"naive": "(a) naive FastAPI, h11", "naive-fast": "(a') naive FastAPI, httptools + uvloop",
          "batch1": "(b) convlab serve --max-batch 1", "default": "(c) convlab serve (defaults)",
          "workers2": "(c') convlab serve --workers 2", "onnx": "(d) convlab serve --backend onnx",
          "onnx-workers2": "(d') convlab serve --backend onnx --workers 2",
          "alone": "(e) model alone, batches of 32"}
# the naive server's HTTP stack: (a) what `pip install fastapi uvicorn` gives (uvicorn's pure-Python h11 parser,
# asyncio's loop); (a') the same app under httptools and uvloop (`pip install "uvicorn[standard]"`)
NAIVE_STACKS = {"naive": ("h11", "asyncio"), "naive-fast": ("httptools", "uvloop")}
SHAPES = {"mnist-cnn": (1, 28, 28), "resnet18": (3, 224, 224)}


# -- the naive server: what users write first ------------------------------------------------------------
def naive_app(run_dir: str, threads: int):
    import torch
    from fastapi import FastAPI
    from PIL import Image

    from convlab.data.decode import load_image
    from convlab.run import load_run

    torch.set_num_threads(threads)
    run = load_run(run_dir)
    model, pre = run.model.eval(), run.preprocess
    mean = torch.tensor(pre.mean).view(1, -1, 1, 1)
    std = torch.tensor(pre.std).view(1, -1, 1, 1)
    app = FastAPI()

    @app.post("/predict/{name}")
    async def predict(name: str, request: Request):
        image = Image.open(io.BytesIO(await request.body()))
        pixels = load_image(image, pre.channels, tuple(pre.size))
        with torch.no_grad():
            batch = (torch.from_numpy(pixels[None]).float() / 255 - mean) / std
            probs = torch.softmax(model(batch), dim=1)[0]
        top = torch.topk(probs, 5)
        return [{"path": None, "top": [{"label": run.classes[i], "prob": float(p)}
                                       for p, i in zip(top.values.tolist(), top.indices.tolist())]}]

    @app.get("/v2/health/ready")
    def ready():
        return {"ready": True}

    return app


def serve_naive(run_dir: str, port: int, threads: int, stack: str) -> None:
    import uvicorn

    http, loop = NAIVE_STACKS[stack]
    uvicorn.run(naive_app(run_dir, threads), host="127.0.0.1", port=port, log_level="warning", access_log=False,
                http=http, loop=loop)


# -- the client: closed loop, in its own process ---------------------------------------------------------
async def _one_connection(port: int, requests: list[bytes], count: list[int], latencies: list[float],
                          statuses: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while count[0] > 0:
            count[0] -= 1
            payload = requests[count[0] % len(requests)]
            started = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            code = int(head.split(b" ", 2)[1])
            statuses[code] = statuses.get(code, 0) + 1
    finally:
        writer.close()


def run_client(port: int, path: str, pngs_file: str, concurrency: int, requests: int, warmup: int) -> dict:
    pngs = np.load(pngs_file, allow_pickle=False)
    bodies = [bytes(row[:length]) for row, length in zip(pngs["data"], pngs["lengths"])]
    payloads = [(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body for body in bodies]

    async def phase(total: int):
        count, latencies, statuses = [total], [], {}
        started = time.perf_counter()
        await asyncio.gather(*(_one_connection(port, payloads, count, latencies, statuses)
                               for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, statuses

    cpu = time.process_time()
    asyncio.run(phase(warmup))
    seconds, latencies, statuses = asyncio.run(phase(requests))
    cpu = time.process_time() - cpu
    latencies.sort()
    return {"rps": len(latencies) / seconds, "p50": 1e3 * latencies[len(latencies) // 2], "warmup": warmup,
            "client_cpu_ms": 1e3 * cpu / (requests + warmup),
            "p99": 1e3 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "statuses": statuses}


# -- the driver ------------------------------------------------------------------------------------------
def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all held open at once, or the kernel may hand out one port twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_run(folder: Path, name: str) -> Path:
    """A run folder of `name` with random weights (seeded), as training would write it."""
    import torch

    from convlab import config as cfg
    from convlab.layout import CONFIG
    from convlab.models.registry import create_model
    from convlab.run import Preprocess, Run

    torch.manual_seed(0)
    channels, height, width = SHAPES[name]
    conf = cfg.Config()
    conf.model.name, conf.data.name = name, "mnist"
    model = create_model(name, channels, 10, (height, width), 0.0).eval()
    preprocess = Preprocess([height, width], channels, [0.1307] * channels, [0.3081] * channels,
                            memory_format="channels_last")
    model.to(memory_format=torch.channels_last)
    folder.mkdir(parents=True)
    run = Run(folder, model, conf, [str(i) for i in range(10)], preprocess)
    run.save_model()
    cfg.save_config(conf, folder / CONFIG)
    return folder


def make_pngs(name: str, data_dir: str | None, out: Path, count: int = 64) -> Path:
    """`count` PNGs in the model's size, stored as one padded uint8 array (the client reads them once)."""
    from PIL import Image

    channels, height, width = SHAPES[name]
    if data_dir:
        from convlab.data.idx import read_idx

        candidates = sorted(Path(data_dir).glob("t10k-images*"))
        digits = read_idx(candidates[0])[:count]
    else:
        digits = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    encoded = []
    for digit in digits:
        image = Image.fromarray(np.asarray(digit, dtype=np.uint8)).resize((width, height), Image.BILINEAR)
        image = image.convert("RGB" if channels == 3 else "L")
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    longest = max(map(len, encoded))
    data = np.zeros((len(encoded), longest), dtype=np.uint8)
    for i, raw in enumerate(encoded):
        data[i, :len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    np.savez(out, data=data, lengths=np.array([len(raw) for raw in encoded]))
    return out


def start_server(kind: str, run_dir: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    # the same thread count everywhere: torch's (--threads / set_num_threads) and the OpenMP and MKL pools'
    # (at import, before any set_num_threads; onnxruntime's intra-op threads follow --threads)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if kind in NAIVE_STACKS:
        command = [sys.executable, str(HERE), "--naive-server", str(run_dir), "--port", str(port),
                   "--threads", str(threads), "--stack", kind]
    else:
        flags = {"batch1": ["--max-batch", "1"], "default": [], "workers2": ["--workers", "2"],
                 "onnx": ["--backend", "onnx"], "onnx-workers2": ["--backend", "onnx", "--workers", "2"]}[kind]
        command = [sys.executable, "-m", "convlab", "serve", f"model={run_dir}", "--port", str(port),
                   "--threads", str(threads), "--no-access-log", *flags]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def wait_ready(port: int, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v2/health/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"a server did not get ready: {log.read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` and of its children (a server's workers), from /proc (Linux;
    0 elsewhere)."""
    tick, total = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100, 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def client_point(port: int, pngs: Path, concurrency: int, requests: int, server_pid: int) -> dict:
    """One point; with the server's CPU time per request (both cores are shared with the client)."""
    before = cpu_seconds(server_pid)
    done = subprocess.run([sys.executable, str(HERE), "--client", str(port), "--pngs", str(pngs),
                           "--concurrency", str(concurrency), "--requests", str(requests)],
                          capture_output=True, text=True, check=True)
    point = json.loads(done.stdout)
    point["server_cpu_ms"] = 1e3 * (cpu_seconds(server_pid) - before) / (requests + point["warmup"])
    return point


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "image/png"
local file = io.open("{png}", "rb")
wrk.body = file:read("*a")
file:close()
"""
WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_point(port: int, png: Path, concurrency: int, seconds: float, server_pid: int) -> dict:
    """One point under wrk (one thread, `concurrency` keep-alive connections, one PNG, `seconds` after 1 s
    of warm-up), with the server's and wrk's CPU time per request."""
    import resource

    script = png.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.format(png=png))
    url = f"http://127.0.0.1:{port}/predict/model"
    command = ["wrk", "-t1", f"-c{concurrency}", "--latency", "-s", str(script), url]
    subprocess.run([*command[:3], "-d1s", *command[3:]], capture_output=True, check=True)  # warm-up
    before, client_before = cpu_seconds(server_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([*command[:3], f"-d{seconds:g}s", *command[3:]], capture_output=True, text=True,
                         check=True).stdout
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = cpu_seconds(server_pid) - before
    client = (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
    rps = float(out.split("Requests/sec:")[1].split()[0])
    done = int(out.split(" requests in ")[0].split()[-1])

    def percentile(name: str) -> float:
        value = out.split(f"\n     {name}")[1].split()[0]
        unit = value.lstrip("0123456789.")
        return float(value[:-len(unit)]) * WRK_UNITS[unit]

    errors = int(out.split("Non-2xx or 3xx responses:")[1].split()[0]) if "Non-2xx" in out else 0
    return {"rps": rps, "p50": percentile("50%"), "p99": percentile("99%"), "requests": done,
            "statuses": {"200": done - errors, **({"error": errors} if errors else {})},
            "server_cpu_ms": 1e3 * server / max(1, done), "client_cpu_ms": 1e3 * client / max(1, done)}


def model_alone(run_dir: Path, pngs: Path, threads: int, requests: int) -> dict:
    """Run.predict_arrays on batches of 32 decoded images: images/s and the latency of one batch call."""
    import torch

    from convlab.data.decode import load_image
    from convlab.run import load_run

    torch.set_num_threads(threads)
    run = load_run(run_dir)
    stored = np.load(pngs)
    images = np.stack([load_image(__import__("PIL.Image").Image.open(io.BytesIO(bytes(row[:n]))),
                                  run.preprocess.channels, tuple(run.preprocess.size))
                       for row, n in zip(stored["data"], stored["lengths"])])
    batch = np.concatenate([images] * (32 // len(images) + 1))[:32]
    for _ in range(3):
        run.predict_arrays(batch)
    times = []
    for _ in range(max(3, requests // 32)):
        started = time.perf_counter()
        run.predict_arrays(batch)
        times.append(time.perf_counter() - started)
    times.sort()
    return {"rps": 32 * len(times) / sum(times), "p50": 1e3 * times[len(times) // 2],
            "p99": 1e3 * times[min(len(times) - 1, int(0.99 * len(times)))]}


def benchmark(name: str, args, work: Path, threads: int) -> list[str]:
    run_dir = make_run(work / name, name)
    pngs = make_pngs(name, args.data_dir, work / f"{name}-pngs.npz")
    requests = args.requests_resnet18 if name == "resnet18" and args.requests_resnet18 else args.requests
    servers = args.servers
    one_png = work / f"{name}.png"  # wrk posts one PNG, the first
    stored = np.load(pngs)
    one_png.write_bytes(bytes(stored["data"][0][:stored["lengths"][0]]))
    ports, processes = dict(zip(servers, free_ports(len(servers)))), {}
    try:
        for kind in servers:
            processes[kind] = start_server(kind, run_dir, ports[kind], threads, work / f"{name}-{kind}.log")
        for kind in servers:
            wait_ready(ports[kind], processes[kind], work / f"{name}-{kind}.log")
        points: dict[tuple[str, int], list[dict]] = {}
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                for kind in servers:
                    path = "/predict/model"
                    if args.wrk:
                        point = wrk_point(ports[kind], one_png, concurrency, args.seconds, processes[kind].pid)
                    else:
                        point = client_point(ports[kind], pngs, concurrency, requests, processes[kind].pid)
                    assert set(point["statuses"]) == {"200"}, (kind, point["statuses"])
                    points.setdefault((kind, concurrency), []).append(point)
                    print(f"  round {round_ + 1} {name} {kind} c={concurrency}: {point['rps']:.0f} req/s "
                          f"p50 {point['p50']:.2f} ms p99 {point['p99']:.2f} ms, CPU per request: server "
                          f"{point['server_cpu_ms']:.2f} ms, client {point['client_cpu_ms']:.2f} ms",
                          file=sys.stderr, flush=True)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait()
    alone = model_alone(run_dir, pngs, threads, max(requests, 320))
    rows = []
    for concurrency in args.concurrency:
        naive_rps = statistics.median(p["rps"] for p in points[(servers[0], concurrency)])
        for kind in servers:
            runs = points[(kind, concurrency)]
            rps, p50, p99, server, client = (statistics.median(p[key] for p in runs) for key in
                                             ("rps", "p50", "p99", "server_cpu_ms", "client_cpu_ms"))
            count = f"{args.seconds:g} s" if args.wrk else requests
            rows.append(f"| {name} | {LABELS[kind]} | {concurrency} | {count} | {rps:,.0f} | {rps / naive_rps:.2f}x "
                        f"| {p50:.2f} | {p99:.2f} | {server:.2f} | {client:.2f} |")
    rows.append(f"| {name} | {LABELS['alone']} | - | {32 * max(3, max(requests, 320) // 32)} images | "
                f"{alone['rps']:,.0f} img/s | - | {alone['p50']:.2f} per batch | {alone['p99']:.2f} per batch "
                f"| - | - |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="a folder with MNIST's IDX files (t10k-images...): real digits")
    parser.add_argument("--models", default="mnist-cnn,resnet18", help="comma-separated (default: both)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per point after warm-up")
    parser.add_argument("--requests-resnet18", type=int, default=0, help="fewer requests for resnet18 points")
    parser.add_argument("--concurrency", default="1,8,32", help="clients in flight (default: 1,8,32)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every point (medians; default: 3)")
    parser.add_argument("--threads", type=int, default=0, help="model threads (0: the idle cores, once)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, the first is the 'vs' reference (default: {','.join(SERVERS)})")
    parser.add_argument("--wrk", action="store_true",
                        help="load the servers with wrk (one PNG, --seconds a point) instead of the Python client")
    parser.add_argument("--seconds", type=float, default=5, help="seconds a point with --wrk (default: 5)")
    parser.add_argument("--naive-server", metavar="RUN_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--stack", default="naive", choices=sorted(NAIVE_STACKS), help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--pngs", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        return serve_naive(args.naive_server, args.port, args.threads, args.stack)
    if args.client:
        concurrency = int(args.concurrency)
        warmup = min(200, max(20, args.requests // 10))
        print(json.dumps(run_client(args.client, "/predict/model", args.pngs, concurrency, args.requests, warmup)))
        return
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.servers = args.servers.split(",")
    unknown = sorted(set(args.servers) - set(SERVERS))
    if unknown:
        parser.error(f"--servers: unknown {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    import torch

    from convlab.training.performance import auto_threads

    threads = args.threads or auto_threads()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {threads} model threads, load average "
          f"{os.getloadavg()[0]:.2f}, {args.rounds} rounds", flush=True)
    print("\n| model | server | clients | requests | req/s | vs naive | p50 ms | p99 ms | server CPU ms/req "
          "| client CPU ms/req |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as work:
        for name in args.models.split(","):
            for row in benchmark(name, args, Path(work), threads):
                print(row, flush=True)


if __name__ == "__main__":
    main()
