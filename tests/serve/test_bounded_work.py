"""Bounded work per request: on every route that takes an image, a small PNG declaring 36 Mpx, a transparent
6000 x 6000 PNG, a 12-Mpx photo and a transparent 12-Mpx PNG each answer (200, or 413 over the default pixel
cap) in under a second with the server's peak memory under 300 MB above its idle level, and the health check
answers within 50 ms (more than it takes idle on the same machine, measured side by side; nine probes in ten)
while four uploads are decoded.

One real `convlab serve` process on 127.0.0.1; its peak resident memory (VmHWM) never decreases, so it is read
once idle and once after every upload."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import running_server

pytestmark = pytest.mark.slow
DEFAULT_CAP = 16_000_000  # pixels: --max-megapixels' default (12- and 16-Mpx phone photos pass)
SECONDS = 1.0
EXTRA_MB = 300
HEALTH_MS = 50


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def uploads() -> dict[str, bytes]:
    """The three files of the issue: a ~11 kB PNG declaring 36 Mpx, a ~140 kB transparent RGBA 6000 x 6000
    PNG, a 12-Mpx JPEG with texture; and a transparent 12-Mpx PNG, the costliest image under the cap."""
    y, x = np.mgrid[0:3000, 0:4000].astype(np.float32)
    planes = [127 + 120 * np.sin(x / (13 + 5 * k)) * np.cos(y / (17 + 3 * k)) for k in range(3)]
    photo = io.BytesIO()
    Image.fromarray(np.stack(planes, -1).astype(np.uint8)).save(photo, "JPEG", quality=85)
    files = {"bilevel-36mpx.png": _png(Image.new("1", (6000, 6000), 1)),
             "transparent-36mpx.png": _png(Image.new("RGBA", (6000, 6000), (0, 0, 0, 0))),
             "photo-12mpx.jpg": photo.getvalue(),
             "transparent-12mpx.png": _png(Image.new("RGBA", (4000, 3000), (0, 0, 0, 0)))}
    assert len(files["bilevel-36mpx.png"]) < 16 * 1024 and len(files["transparent-36mpx.png"]) < 200_000
    return files


def peak_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def post(httpx, url: str, route: str, name: str, data: bytes):
    """POST one image the way `route` takes it -> the response."""
    multipart = {"files": {"file": (name, data, "application/octet-stream")}}
    if route == "predict multipart":
        return httpx.post(f"{url}/predict/digits", timeout=30, **multipart)
    if route == "predict raw":
        return httpx.post(f"{url}/predict/digits", content=data, headers={"Content-Type": "image/png"}, timeout=30)
    if route == "oip bytes":
        body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                            "data": [base64.b64encode(data).decode()]}]}
        return httpx.post(f"{url}/v2/models/digits/infer", content=json.dumps(body),
                          headers={"Content-Type": "application/json"}, timeout=30)
    if route == "gradcam":
        return httpx.post(f"{url}/api/gradcam/digits", timeout=30, **multipart)
    if route == "gradcam raw":
        return httpx.post(f"{url}/api/gradcam/digits", content=data, headers={"Content-Type": "image/png"},
                          timeout=30)
    return httpx.post(f"{url}/api/attribute/digits?method=saliency", timeout=30, **multipart)


# the three files; the transparent 12-Mpx PNG is checked for its answer and memory, not timed: Pillow
# inflates all of its 48 MB before reducing it (about 0.3 s here, more on a busy machine)
TIMED = ("bilevel-36mpx.png", "transparent-36mpx.png", "photo-12mpx.jpg")
ROUTES = ("predict multipart", "predict raw", "oip bytes", "gradcam", "gradcam raw", "attribute")


def answered_correctly(route: str, response, pixels: int) -> bool:
    """200 with the route's answer, or 413 naming the cap for an image declaring more than it."""
    if pixels > DEFAULT_CAP:
        return response.status_code == 413 and "refused before decoding" in response.json()["error"]
    if response.status_code != 200:
        return False
    if route.startswith("predict"):
        return len(response.json()) == 1 and len(response.json()[0]["top"]) >= 1
    if route == "oip bytes":
        return response.json()["outputs"][0]["shape"][0] == 1
    picture = Image.open(io.BytesIO(response.content))
    return picture.format == "PNG" and max(picture.size) <= 1024


def test_every_image_route_does_bounded_work(digits_run):
    pytest.importorskip("captum", reason="the attribute route needs the attribution extra")
    httpx = pytest.importorskip("httpx")
    files = uploads()
    with running_server(f"digits={digits_run.path}", "--no-access-log") as (url, process):
        for route in ROUTES:  # warm every route up (imports, first forward pass) on a tiny image
            assert post(httpx, url, route, "tiny.png", _png(Image.new("L", (8, 8), 9))).status_code == 200
        idle = peak_mb(process.pid)
        slow, failed = [], []
        for name, data in files.items():
            pixels = np.prod(Image.open(io.BytesIO(data)).size)
            for route in ROUTES:
                start = time.perf_counter()
                response = post(httpx, url, route, name, data)
                seconds = time.perf_counter() - start
                if not answered_correctly(route, response, pixels):
                    failed.append(f"{route} {name}: {response.status_code} {response.text[:200]}")
                if seconds >= SECONDS and name in TIMED:
                    slow.append(f"{route} {name}: {seconds:.2f} s")
        extra = peak_mb(process.pid) - idle
        assert not failed, failed
        assert not slow, slow
        assert extra < EXTRA_MB, f"peak memory {extra:.0f} MB above idle"

        # four uploads decoding at once must not stall the event loop; a 5 kB PNG declaring 16 Mpx was
        # decoded in it (its bytes were few), now the declared size sends it to the decoding threads
        small = _png(Image.new("1", (4000, 4000), 1))
        assert len(small) < 8 * 1024
        results = []
        senders = [threading.Thread(target=lambda: results.append(
            post(httpx, url, "predict raw", "bilevel", small).status_code)) for _ in range(4)]
        with httpx.Client() as health:
            idle_waits = [health_ms(health, url) for _ in range(20)]  # the machine's own delay, side by side
            for sender in senders:
                sender.start()
            waits = []
            while any(sender.is_alive() for sender in senders):
                waits.append(health_ms(health, url))
        for sender in senders:
            sender.join()
        assert results == [200] * 4
        # nine in ten within 50 ms of the idle delay: on a 2-core machine shared with other work the scheduler
        # alone delays a few by more; a decode on the event loop delays nearly all by its whole length
        ninth = sorted(waits)[len(waits) * 9 // 10 - 1] if len(waits) >= 3 else float("inf")
        assert ninth < HEALTH_MS + max(idle_waits), (
            f"busy {[round(ms) for ms in waits]}, idle {[round(ms) for ms in idle_waits]}")


def health_ms(client, url: str) -> float:
    """Milliseconds /v2/health/ready takes to answer 200 (then a 10 ms pause)."""
    start = time.perf_counter()
    assert client.get(f"{url}/v2/health/ready").status_code == 200
    ms = (time.perf_counter() - start) * 1000
    time.sleep(0.01)
    return ms
