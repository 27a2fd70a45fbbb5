"""`convlab serve --workers 2`: both processes answer on one port, /metrics sums them, Ctrl-C stops them all."""
from __future__ import annotations

import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from .conftest import running_server

pytestmark = pytest.mark.slow
ACCESS = re.compile(r'\[(\d+)\] 127\.0\.0\.1 "POST /predict/digits" 200 ')


def metric(text: str, pattern: str) -> float:
    return sum(float(value) for value in re.findall(pattern, text))


def test_two_workers_answer_and_metrics_sum_them(digits_run, digit_pngs):
    bodies = [path.read_bytes() for path in digit_pngs]
    with running_server(f"digits={digits_run.path}", "--workers", "2") as (url, process):
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        answers = {}

        def post(i: int) -> None:  # a new connection each time, so either worker may accept it
            answer = httpx.post(f"{url}/predict/digits", content=bodies[i % len(bodies)],
                                headers={"Content-Type": "image/png"})
            assert answer.status_code == 200, answer.text
            answers.setdefault(i % len(bodies), []).append(answer.json())

        sent = 0
        with ThreadPoolExecutor(8) as pool:
            while sent < 400 and len({m.group(1) for m in map(ACCESS.search, list(lines)) if m}) < 2:
                list(pool.map(post, range(sent, sent + 16)))
                sent += 16
        workers = {int(m.group(1)) for m in map(ACCESS.search, list(lines)) if m}
        assert len(workers) == 2 and process.pid not in workers  # two worker processes, not the parent
        for same_image in answers.values():  # the same answer whichever worker gave it, up to float32 rounding
            for answer in same_image:  # (another batch mix sums in another order)
                assert [t["label"] for t in answer[0]["top"]] == [t["label"] for t in same_image[0][0]["top"]]
                np.testing.assert_allclose([t["prob"] for t in answer[0]["top"]],
                                           [t["prob"] for t in same_image[0][0]["top"]], atol=1e-6)
        requests = r'convlab_requests_total\{code="200",method="POST",route="/predict/\{name\}"\} ([0-9.e+]+)'
        for _ in range(4):  # each scrape, from whichever worker accepts it, counts every worker's requests
            text = httpx.get(f"{url}/metrics").text
            assert metric(text, requests) == sent
            assert metric(text, r'convlab_batch_size_sum\{model="digits"\} ([0-9.e+]+)') == sent  # images
            assert 'convlab_queue_depth{model="digits"} 0.0' in text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        reader.join(timeout=10)
    output = "".join(lines)
    assert lines[-1].strip() == "stopped" and "Traceback" not in output, output[-2000:]
    assert "in each of 2 worker processes" in output
    for pid in workers:  # no worker outlives the server
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()


def test_a_killed_worker_leaves_the_queue_depth_sum(tmp_path, monkeypatch):
    """A worker SIGKILLed with 5 requests queued never runs its own clean-up: the next scrape drops its
    queue depth from the live workers' sum instead of reporting 5 waiting requests for good."""
    import subprocess
    import sys
    from pathlib import Path

    import convlab
    from convlab.serve.metrics import ServerMetrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    worker = ("import time\nfrom convlab.serve.metrics import ServerMetrics\n"
              "ServerMetrics().depth_observer('digits')(5)\nprint('queued', flush=True)\ntime.sleep(600)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(convlab.__file__).parents[1]))
    process = subprocess.Popen([sys.executable, "-c", worker], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout.readline().strip() == "queued"
        scraper = ServerMetrics()
        assert 'convlab_queue_depth{model="digits"} 5.0' in scraper.render()[0].decode()  # alive: counted
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    depth = r'convlab_queue_depth\{model="digits"\} ([0-9.e+]+)'
    assert metric(scraper.render()[0].decode(), depth) == 0
    assert not list(tmp_path.glob("gauge_live*"))
