"""What the server refuses, and with which status: 401, 404 names, 413, 415, 422, 503, 504; never a 500."""
from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from convlab.serve.app import create_app
from convlab.serve.settings import ServerSettings


def crafted_png(width: int, height: int) -> bytes:
    """A PNG that declares width x height 8-bit gray pixels but holds one compressed row: a decompression bomb
    as far as the header goes (a decoder would allocate width x height bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def encoded(format_: str, size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full(size, 128, dtype=np.uint8)).save(buffer, format_)
    return buffer.getvalue()


def post_image(client, data: bytes, kind="image/png", url="/predict/digits"):
    return client.post(url, content=data, headers={"Content-Type": kind})


def test_token(make_client, digit_pngs):
    client = make_client(token="s3cret")
    png = digit_pngs[0].read_bytes()
    assert post_image(client, png).status_code == 401
    wrong = client.post("/predict/digits", content=png, headers={"Content-Type": "image/png",
                                                                 "Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "token" in wrong.json()["error"]
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/v2/models/digits", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    right = client.post("/predict/digits", content=png, headers={"Content-Type": "image/png",
                                                                 "Authorization": "Bearer s3cret"})
    assert right.status_code == 200
    assert client.get("/v2/health/ready").status_code == 200  # probes need no token


@pytest.mark.parametrize("url", ["/v2/models/%2E%2E/ready", "/v2/models/..%2F..%2Fetc%2Fpasswd",
                                 "/predict/..%2Fdigits", "/v2/models/digits%2F..%2F..%2Fconfig.yaml/infer"])
def test_path_like_model_names_are_unknown_names(client, url):
    answer = client.post(url, content=b"{}") if url.endswith("infer") or "predict" in url else client.get(url)
    assert answer.status_code == 404 and "error" in answer.json()


def test_body_cap_declared_and_chunked(make_client):
    client = make_client(max_upload_mb=1 / 1024)  # 1 KiB
    big = b"\x00" * 4096
    answer = post_image(client, big)
    assert answer.status_code == 413 and "cap of 1,024 bytes" in answer.json()["error"]
    chunked = client.post("/predict/digits", content=iter([big[:1000], big[1000:]]),
                          headers={"Content-Type": "image/png"})
    assert chunked.status_code == 413


@pytest.mark.parametrize("url, kind", [("/predict/digits", "image/png"),
                                       ("/predict/digits", "multipart/form-data; boundary=x"),
                                       ("/v2/models/digits/infer", "application/json"),
                                       ("/api/gradcam/digits", "multipart/form-data; boundary=x"),
                                       ("/api/explain/conv", "application/json")])
def test_a_chunked_body_over_the_cap_is_413_json_on_every_route(make_client, url, kind):
    client = make_client(max_upload_mb=1 / 1024)  # 1 KiB
    answer = client.post(url, content=iter([b"\0" * 600] * 4), headers={"Content-Type": kind})
    assert answer.status_code == 413 and "cap of 1,024 bytes" in answer.json()["error"]


def test_the_body_limit_passes_chunks_through_unbuffered_and_stops_at_the_cap():
    """The route reads the chunks as they arrive (not one copy of the whole body), and a body over the cap
    is refused at the chunk that passes it: the chunks after it are never read."""
    from convlab.serve.limits import BodyLimit

    def run(chunks: list[bytes], max_bytes: int):
        pulled, seen, sent = [], [], []

        async def receive():
            pulled.append(len(pulled))
            return {"type": "http.request", "body": chunks[len(pulled) - 1], "more_body": len(pulled) < len(chunks)}

        async def route(scope, receive, send):
            while True:
                message = await receive()
                seen.append(message["body"])
                if not message["more_body"]:
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
        asyncio.run(BodyLimit(route, max_bytes)(scope, receive, send))
        return len(pulled), seen, sent

    pulled, seen, sent = run([b"a" * 10, b"b" * 10, b"c" * 10], max_bytes=100)
    assert seen == [b"a" * 10, b"b" * 10, b"c" * 10] and sent[0]["status"] == 200
    pulled, seen, sent = run([b"x" * 40] * 5, max_bytes=100)
    assert pulled == 3 and sent[0]["status"] == 413
    assert b"cap of 100 bytes" in sent[1]["body"] and (b"connection", b"close") in sent[0]["headers"]


def test_a_loopback_server_answers_only_loopback_host_names(make_client, digit_pngs):
    """DNS rebinding: a page at evil.example resolved to 127.0.0.1 sends `Host: evil.example`; it gets a
    400 JSON error on every route, the hot path included; the loopback names pass with any port."""
    from convlab.serve.limits import LOOPBACK_HOSTS

    client = make_client(allowed_hosts=list(LOOPBACK_HOSTS))
    for path in ("/v2/health/ready", "/api/models", "/"):
        answer = client.get(path, headers={"Host": "evil.example"})
        assert answer.status_code == 400 and "'evil.example' is not a name of this server" in answer.json()["error"]
    answer = post_image(client, digit_pngs[0].read_bytes())
    assert answer.status_code == 400  # TestClient's own Host, testserver, is not a loopback name either
    for host in ("localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:8000", "LOCALHOST:80"):
        answer = client.post("/predict/digits", content=digit_pngs[0].read_bytes(),
                             headers={"Content-Type": "image/png", "Host": host})
        assert answer.status_code == 200, (host, answer.text)
    assert make_client().get("/v2/health/ready", headers={"Host": "evil.example"}).status_code == 200  # unset: any


def test_too_many_images_in_one_request(make_client, digit_pngs):
    client = make_client(max_images=2)
    files = [("file", ("a.png", digit_pngs[0].read_bytes(), "image/png"))] * 3
    answer = client.post("/predict/digits", files=files)
    assert answer.status_code == 413 and "more than 2" in answer.json()["error"]


def test_decompression_bombs_are_refused_before_decoding(make_client):
    client = make_client()
    over_cap = post_image(client, crafted_png(12_000, 12_000))  # 144 M pixels: over the 40 M cap
    assert over_cap.status_code == 413 and "refused before decoding" in over_cap.json()["error"]
    over_pillow = post_image(client, crafted_png(30_000, 30_000))  # over Pillow's own bomb limit too
    assert over_pillow.status_code == 413
    small_cap = make_client(max_pixels=1000)
    assert post_image(small_cap, encoded("PNG", (40, 40))).status_code == 413


def test_formats(client):
    for format_ in ("PNG", "JPEG", "WEBP", "BMP", "GIF"):
        assert post_image(client, encoded(format_)).status_code == 200, format_
    tiff = post_image(client, encoded("TIFF"))  # Pillow reads it; the server does not serve it
    assert tiff.status_code == 415 and "PNG, JPEG" in tiff.json()["error"]
    assert post_image(client, b"hello").status_code == 415
    truncated = post_image(client, encoded("PNG", (64, 64))[:60])
    assert truncated.status_code == 422 and "error" in truncated.json()
    assert post_image(client, b"").status_code == 422
    text = client.post("/predict/digits", content=b"x", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    no_file = client.post("/predict/digits", files=[("other", ("a.png", encoded("PNG"), "image/png"))])
    assert no_file.status_code == 422 and "'file'" in no_file.json()["error"]
    assert client.post("/predict/digits?top_k=0", content=encoded("PNG"),
                       headers={"Content-Type": "image/png"}).status_code == 422
    assert client.post("/predict/digits?top_k=x", content=encoded("PNG"),
                       headers={"Content-Type": "image/png"}).json()["error"].startswith("query.top_k")


def test_queue_full_503_and_deadline_504(served):
    """The inference thread is not started (as when it is busy with a long batch), so requests wait: the first
    two fill the queue and time out unrun (504), the rest find it full (503 with Retry-After)."""
    app = create_app({"digits": served}, ServerSettings(max_queue=2, timeout_s=0.3), access_log=False)
    state = app.state.serve
    state.decoder = ThreadPoolExecutor(1)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0.0] * 64}]}

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*(http.post("/v2/models/digits/infer", json=body) for _ in range(5)))

    answers = asyncio.run(burst())
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [503, 503, 503, 504, 504]
    full = next(answer for answer in answers if answer.status_code == 503)
    assert full.headers["Retry-After"] == "1" and "--max-queue" in full.json()["error"]
    assert "--timeout-s" in next(a for a in answers if a.status_code == 504).json()["error"]
    state.batchers["digits"].start()  # the thread now finds only the cancelled jobs: it runs nothing
    time.sleep(0.1)
    state.stop()
    assert state.metrics.registry.get_sample_value("convlab_batch_size_count", {"model": "digits"}) == 0
