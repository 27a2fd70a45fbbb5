"""The Open Inference Protocol routes in process (TestClient): metadata, JSON and binary infer, classification."""
from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from .conftest import png_bytes


def normalized(run, images: np.ndarray) -> np.ndarray:
    """uint8 (N, C, H, W) -> the model's float32 input, as predict normalizes."""
    mean = np.asarray(run.preprocess.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(run.preprocess.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def binary_request(header: dict, *tensors: bytes) -> tuple[bytes, dict]:
    """Triton's binary tensor extension: the JSON header, then the raw tensors; its length in a header."""
    head = json.dumps(header).encode()
    return head + b"".join(tensors), {"Inference-Header-Content-Length": str(len(head)),
                                      "Content-Type": "application/octet-stream"}


def split_binary(response) -> tuple[dict, bytes]:
    length = int(response.headers["Inference-Header-Content-Length"])
    return json.loads(response.content[:length]), response.content[length:]


def test_health_server_and_model_metadata(client, digits_run):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "convlab" and {"binary_tensor_data", "classification"} <= set(server["extensions"])
    for url in ("/v2/models/digits", "/v2/models/digits/versions/1"):
        meta = client.get(url).json()
        assert meta["name"] == "digits" and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]},
                                  {"name": "image", "datatype": "BYTES", "shape": [-1]}]
        assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                                   {"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    assert client.get("/v2/models/digits/versions/1/ready").json()["ready"] is True
    missing = client.get("/v2/models/digits/versions/7")
    assert missing.status_code == 404 and "version" in missing.json()["error"]


def test_not_ready_before_the_batchers_start(served):
    from fastapi.testclient import TestClient

    from convlab.serve.app import create_app

    client = TestClient(create_app({"digits": served}, access_log=False))  # no lifespan: nothing started
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 503
    not_ready = client.get("/v2/models/digits/ready")
    assert not_ready.status_code == 503 and not_ready.json()["ready"] is False


def test_json_infer_of_preprocessed_input_matches_the_run(client, digits_run):
    images = digits_run.test_data().images[:3]
    inputs = normalized(digits_run, images)
    body = {"id": "req-1", "inputs": [{"name": "input", "datatype": "FP32", "shape": list(inputs.shape),
                                       "data": inputs.reshape(-1).tolist()}]}
    answer = client.post("/v2/models/digits/infer", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert document["model_name"] == "digits" and document["id"] == "req-1"
    outputs = {o["name"]: o for o in document["outputs"]}
    assert outputs["probabilities"]["shape"] == [3, 10] and outputs["logits"]["datatype"] == "FP32"
    probs = np.asarray(outputs["probabilities"]["data"]).reshape(3, 10)
    np.testing.assert_allclose(probs, digits_run.predict_arrays(images), atol=1e-6)
    logits = np.asarray(outputs["logits"]["data"]).reshape(3, 10)
    np.testing.assert_allclose(logits, digits_run.predict_logits(images), atol=1e-5)


def test_binary_infer_of_encoded_images(client, digits_run):
    images = digits_run.test_data().images[:4]
    pngs = [png_bytes(pixels) for pixels in images]
    raw = b"".join(struct.pack("<I", len(data)) + data for data in pngs)
    header = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [4],
                          "parameters": {"binary_data_size": len(raw)}}],
              "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                          {"name": "logits", "parameters": {"binary_data": False}}]}
    body, headers = binary_request(header, raw)
    answer = client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    document, rest = split_binary(answer)
    probs_out, logits_out = document["outputs"]
    assert probs_out["parameters"]["binary_data_size"] == len(rest) == 4 * 10 * 4
    probs = np.frombuffer(rest, dtype="<f4").reshape(4, 10)
    np.testing.assert_allclose(probs, digits_run.predict_arrays(images), atol=1e-6)
    assert len(logits_out["data"]) == 40  # the output asked in JSON comes in JSON


@pytest.mark.parametrize("input_name", ["input", "images"])  # images: the exported .onnx file's input name
def test_binary_float_input_and_binary_data_output(client, digits_run, input_name):
    images = digits_run.test_data().images[:2]
    inputs = normalized(digits_run, images)
    raw = inputs.astype("<f4").tobytes()
    body, headers = binary_request({"inputs": [{"name": input_name, "datatype": "FP32", "shape": [2, 1, 8, 8],
                                                "parameters": {"binary_data_size": len(raw)}}],
                                    "parameters": {"binary_data_output": True}}, raw)
    document, rest = split_binary(client.post("/v2/models/digits/infer", content=body, headers=headers))
    assert [o["name"] for o in document["outputs"]] == ["probabilities", "logits"]
    probs = np.frombuffer(rest[:80], dtype="<f4").reshape(2, 10)
    logits = np.frombuffer(rest[80:], dtype="<f4").reshape(2, 10)
    np.testing.assert_allclose(probs, digits_run.predict_arrays(images), atol=1e-6)
    np.testing.assert_allclose(logits, digits_run.predict_logits(images), atol=1e-5)


def test_classification_extension(client, digits_run):
    images = digits_run.test_data().images[:3]
    data = [base64.b64encode(png_bytes(pixels)).decode() for pixels in images]
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3], "data": data}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    output = client.post("/v2/models/digits/infer", json=body).json()["outputs"][0]
    assert output["datatype"] == "BYTES" and output["shape"] == [3, 2]
    expected = digits_run.predict_arrays(images)
    for i in range(3):
        best = np.argsort(-expected[i])[:2]
        got = [text.split(":") for text in output["data"][2 * i:2 * i + 2]]
        assert [int(index) for _, index, _ in got] == list(best)
        assert [label for _, _, label in got] == [digits_run.classes[j] for j in best]
        assert float(got[0][0]) == pytest.approx(expected[i, best[0]], abs=1e-6)

    raw_body, headers = binary_request({"inputs": body["inputs"], "outputs": [
        {"name": "logits", "parameters": {"classification": 1, "binary_data": True}}]})
    document, rest = split_binary(client.post("/v2/models/digits/infer", content=raw_body, headers=headers))
    elements, offset = [], 0
    while offset < len(rest):
        (length,) = struct.unpack_from("<I", rest, offset)
        elements.append(rest[offset + 4:offset + 4 + length].decode())
        offset += 4 + length
    assert document["outputs"][0]["shape"] == [3, 1]
    assert [int(e.split(":")[1]) for e in elements] == list(expected.argmax(1))


@pytest.mark.parametrize("body, fragment", [
    (b"not json", "not JSON"),
    (b"[1, 2]", '"inputs"'),
    (json.dumps({"inputs": []}).encode(), '"inputs"'),
    (json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}).encode(), "unknown input"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 9, 9], "data": [0]}]}).encode(),
     "shape [N, 1, 8, 8]"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0] * 63}]}).encode(),
     "63 values"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                             "data": ["a"] * 64}]}).encode(), "must be numbers"),
    (json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}).encode(),
     "base64"),
    (json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["AAAA"]}]}).encode(),
     "1 elements"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0] * 64}],
                 "outputs": [{"name": "scores"}]}).encode(), "unknown output"),
    (json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [0] * 64}],
                 "outputs": [{"name": "logits", "parameters": {"classification": 0}}]}).encode(), "classification"),
])
def test_malformed_infer_requests_are_400(client, body, fragment):
    answer = client.post("/v2/models/digits/infer", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400 and fragment in answer.json()["error"]


def test_non_finite_inputs_are_400(client):
    raw = np.full((1, 1, 8, 8), np.nan, dtype="<f4").tobytes()
    body, headers = binary_request({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                                                "parameters": {"binary_data_size": len(raw)}}]}, raw)
    answer = client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert answer.status_code == 400 and "finite" in answer.json()["error"]
    too_big = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": [1e39] * 64}]}
    assert client.post("/v2/models/digits/infer", json=too_big).status_code == 400  # inf in float32


def test_malformed_binary_framing_is_400(client):
    header = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 99}}]}
    body, headers = binary_request(header, b"\x05\x00\x00\x00abc")
    answer = client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert answer.status_code == 400 and "binary_data_size" in answer.json()["error"]
    answer = client.post("/v2/models/digits/infer", content=b"{}",
                         headers={"Inference-Header-Content-Length": "500"})
    assert answer.status_code == 400 and "Inference-Header-Content-Length" in answer.json()["error"]
    header["inputs"][0]["parameters"]["binary_data_size"] = 7
    body, headers = binary_request(header, b"\x05\x00\x00\x00abc")
    answer = client.post("/v2/models/digits/infer", content=body, headers=headers)
    assert answer.status_code == 400 and "runs past" in answer.json()["error"]


def test_metrics_count_requests_batches_and_queue(client):
    client.get("/v2/health/ready")
    client.get("/v2/models/nosuch")
    inputs = [{"name": "input", "datatype": "FP32", "shape": [3, 1, 8, 8], "data": [0.0] * 192}]
    client.post("/v2/models/digits/infer", json={"inputs": inputs})
    text = client.get("/metrics").text
    assert 'convlab_requests_total{code="200",method="GET",route="/v2/health/ready"} 1.0' in text
    assert 'convlab_request_errors_total{code="404",method="GET",route="/v2/models/{name}"} 1.0' in text
    assert 'convlab_batch_size_sum{model="digits"} 3.0' in text
    assert 'convlab_queue_depth{model="digits"} 0.0' in text
    assert 'convlab_request_seconds_count{method="POST",route="/v2/models/{name}/infer"} 1.0' in text
