"""A real `convlab serve` on 127.0.0.1: driven by tritonclient, loaded by 32 clients, stopped by Ctrl-C."""
from __future__ import annotations

import asyncio
import json
import random
import re
import signal

import httpx
import numpy as np
import pytest

from .conftest import running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(digits_run):
    with running_server(f"digits={digits_run.path}", "--max-batch", "16", "--no-access-log") as (url, process):
        yield url


def test_tritonclient(server, digits_run, digit_pngs):
    http = pytest.importorskip("tritonclient.http")
    client = http.InferenceServerClient(server.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("digits")
    assert {i["name"]: i["shape"] for i in meta["inputs"]} == {"input": [-1, 1, 8, 8], "image": [-1]}
    expected = [result["top"][0]["label"] for result in digits_run.predict(digit_pngs, top_k=1)]
    pngs = np.array([path.read_bytes() for path in digit_pngs], dtype=np.object_)

    for binary in (True, False):
        image = http.InferInput("image", [len(pngs)], "BYTES")
        image.set_data_from_numpy(pngs, binary_data=True)  # PNG bytes are not UTF-8: binary either way
        outputs = [http.InferRequestedOutput("probabilities", binary_data=binary),
                   http.InferRequestedOutput("logits", binary_data=binary)]
        result = client.infer("digits", [image], outputs=outputs)
        probs = result.as_numpy("probabilities")
        assert probs.shape == (len(pngs), 10) and probs.dtype == np.float32
        assert [digits_run.classes[i] for i in probs.argmax(1)] == expected
        assert (result.as_numpy("logits").argmax(1) == probs.argmax(1)).all()

    mean = np.asarray(digits_run.preprocess.mean, np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(digits_run.preprocess.std, np.float32).reshape(1, -1, 1, 1)
    inputs = ((digits_run.test_data().images[:len(pngs)] / np.float32(255) - mean) / std).astype(np.float32)
    for binary in (True, False):
        tensor = http.InferInput("input", list(inputs.shape), "FP32")
        tensor.set_data_from_numpy(inputs, binary_data=binary)
        wanted = http.InferRequestedOutput("probabilities", binary_data=binary, class_count=1)
        result = client.infer("digits", [tensor], outputs=[wanted])
        entries = result.as_numpy("probabilities").reshape(-1)  # bytes when binary, str from JSON
        top = [(entry.decode() if isinstance(entry, bytes) else entry).split(":") for entry in entries]
        assert [label for _, _, label in top] == expected

    default = client.infer("digits", [image])  # no outputs named: all of them, binary
    assert default.as_numpy("logits").shape == (len(pngs), 10)
    with pytest.raises(Exception, match="no model named"):
        client.infer("nosuch", [image])


def test_load_mix_of_valid_and_malformed(server, digits_run, digit_pngs):
    """2,000 requests from 32 concurrent clients: valid ones answer as predict does, malformed ones get a 4xx."""
    expected = {path.name: result for path, result in zip(digit_pngs, digits_run.predict(digit_pngs, top_k=3))}
    pngs = {path.name: path.read_bytes() for path in digit_pngs}
    rng = random.Random(0)
    kinds = ["predict", "infer", "junk", "truncated", "badjson", "nomodel"]
    plan = [rng.choice(kinds) for _ in range(2000)]

    async def one(http, kind, name):
        data = pngs[name]
        if kind == "predict":
            return await http.post("/predict/digits?top_k=3", files=[("file", (name, data, "image/png"))])
        if kind == "infer":
            body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                "data": [__import__("base64").b64encode(data).decode()]}],
                    "outputs": [{"name": "probabilities"}]}
            return await http.post("/v2/models/digits/infer", json=body)
        if kind == "junk":
            return await http.post("/predict/digits", content=bytes(rng.randrange(256) for _ in range(64)),
                                   headers={"Content-Type": "image/png"})
        if kind == "truncated":
            return await http.post("/predict/digits", content=data[:len(data) // 2],
                                   headers={"Content-Type": "image/png"})
        if kind == "badjson":
            return await http.post("/v2/models/digits/infer", content=b'{"inputs": [',
                                   headers={"Content-Type": "application/json"})
        return await http.post("/predict/nosuch", content=data, headers={"Content-Type": "image/png"})

    async def drive():
        queue = asyncio.Queue()
        for index, kind in enumerate(plan):
            queue.put_nowait((index, kind, rng.choice(list(pngs))))
        answers = {}

        async def worker():
            async with httpx.AsyncClient(base_url=server, timeout=60) as http:
                while not queue.empty():
                    index, kind, name = queue.get_nowait()
                    answers[index] = (kind, name, await one(http, kind, name))

        await asyncio.gather(*(worker() for _ in range(32)))
        return answers

    answers = asyncio.run(drive())
    assert len(answers) == len(plan)  # none lost
    for kind, name, answer in answers.values():
        if kind == "predict":
            assert answer.status_code == 200, answer.text
            [got] = answer.json()
            assert got["path"] == name
            want = expected[name]["top"]
            assert [t["label"] for t in got["top"]] == [t["label"] for t in want]
            # the same numbers up to float32 rounding: another batch mix sums in another order
            np.testing.assert_allclose([t["prob"] for t in got["top"]], [t["prob"] for t in want], atol=1e-6)
        elif kind == "infer":
            assert answer.status_code == 200, answer.text
            probs = np.asarray(answer.json()["outputs"][0]["data"])
            assert digits_run.classes[int(probs.argmax())] == expected[name]["top"][0]["label"]
        else:
            assert 400 <= answer.status_code < 500, (kind, answer.status_code, answer.text)
            assert "error" in answer.json()
    assert httpx.get(f"{server}/v2/health/ready").status_code == 200
    metrics = httpx.get(f"{server}/metrics").text
    posts = r'convlab_requests_total\{code="[0-9]+",method="POST",route="[^"]*"\} ([0-9.e+]+)'
    served = sum(float(v) for v in re.findall(posts, metrics))
    assert served >= len(plan)
    assert "convlab_request_errors_total" in metrics and 'code="500"' not in metrics


def test_ctrl_c_stops_cleanly_and_warns_off_loopback(digits_run):
    with running_server(str(digits_run.path), "--host", "0.0.0.0") as (url, process):
        assert httpx.get(f"{url}/v2/health/live").status_code == 200
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)
        output = process.stdout.read()
    assert code == 0, output
    lines = output.splitlines()
    assert lines[0].startswith(f"loaded {digits_run.path.name} from ") and "10 classes, 1x8x8" in lines[0]
    assert lines[1].startswith("warning: listening on 0.0.0.0 without --token")
    assert lines[2].startswith("serving ") and "Ctrl-C stops" in lines[2]
    assert any('"GET /v2/health/live" 200' in line for line in lines)  # the access log
    assert lines[-1] == "stopped" and "Traceback" not in output
