"""/predict answers what `convlab predict --json` prints for the same images; /api/models lists the models."""
from __future__ import annotations

import json

from convlab.cli import main


def predict_json(capsys, run_dir, paths, *flags) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", str(run_dir), *map(str, paths), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_equals_the_cli(client, digits_run, digit_pngs, capsys):
    expected = predict_json(capsys, digits_run.path, digit_pngs, "--top-k", "3")
    files = [("file", (str(path), path.read_bytes(), "image/png")) for path in digit_pngs]
    answer = client.post("/predict/digits?top_k=3", files=files)
    assert answer.status_code == 200
    assert answer.json() == expected  # the same paths, labels and probabilities, in order


def test_raw_body_and_default_top_k(client, digits_run, digit_pngs, capsys):
    expected = predict_json(capsys, digits_run.path, digit_pngs[:1])
    answer = client.post("/predict/digits", content=digit_pngs[0].read_bytes(), headers={"Content-Type": "image/png"})
    assert answer.json() == [{**expected[0], "path": None}]
    assert len(answer.json()[0]["top"]) == 5


def test_api_models(client, digits_run):
    [entry] = client.get("/api/models").json()
    assert entry["name"] == "digits" and entry["backend"] == "torch"
    assert entry["labels"] == digits_run.classes and entry["input_shape"] == [1, 8, 8]
    assert entry["metrics"]["accuracy"] == digits_run.metrics["accuracy"]


def test_openapi_describes_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
                  "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer", "/predict/{name}",
                  "/api/models", "/metrics"):
        assert route in paths, route
    assert "multipart/form-data" in paths["/predict/{name}"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN


def test_small_and_large_images_decode_alike(client, digits_run, tmp_path, capsys):
    """A small image is decoded in the event loop, a large one in the decoding threads: both as predict does."""
    import numpy as np
    from PIL import Image

    from convlab.serve.state import INLINE_DECODE_PIXELS

    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    large, small = tmp_path / "large.png", tmp_path / "small.png"
    Image.fromarray(noise).save(large)
    Image.fromarray(noise[:8, :8, 0]).save(small)
    assert 200 * 200 > INLINE_DECODE_PIXELS >= 8 * 8
    for path in (large, small):
        [want] = predict_json(capsys, digits_run.path, [path])  # one image a batch, as the server runs it alone
        answer = client.post("/predict/digits", content=path.read_bytes(), headers={"Content-Type": "image/png"})
        assert answer.status_code == 200 and answer.json() == [{**want, "path": None}]


def test_hot_path_answers_as_the_route(make_client, digit_pngs):
    """A raw image with ?top_k=K takes the hot path; an extra parameter sends the same request through FastAPI's
    route: the same answers, errors and metrics either way, and the token is checked on both."""
    import re

    client = make_client(token="s3cret")
    good, bad = digit_pngs[0].read_bytes(), b"\x89PNG\r\n\x1a\n not really"
    headers = {"Content-Type": "image/png", "Authorization": "Bearer s3cret"}
    for body in (good, bad):
        fast = client.post("/predict/digits?top_k=3", content=body, headers=headers)
        routed = client.post("/predict/digits?top_k=3&via=route", content=body, headers=headers)
        assert (fast.status_code, fast.json()) == (routed.status_code, routed.json())
    assert fast.status_code == 415 and "not an image" in fast.json()["error"]
    wrong = client.post("/predict/digits", content=good, headers={**headers, "Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong token" in wrong.json()["error"]
    assert client.post("/predict/digits?top_k=0", content=good, headers=headers).status_code == 422
    text = client.get("/metrics", headers=headers).text
    counts = dict(re.findall(r'convlab_requests_total\{code="(\d+)",method="POST",route="/predict/\{name\}"\} '
                             r'([0-9.]+)', text))
    assert counts == {"200": "2.0", "415": "2.0", "422": "1.0", "401": "1.0"}
