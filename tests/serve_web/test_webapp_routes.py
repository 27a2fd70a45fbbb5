"""The web app's routes on a TestClient: pages and static files, Grad-CAM, a run's results, the Learn page's
convolution (the same numbers as `convlab explain conv`), and 4xx JSON errors for every bad request."""
from __future__ import annotations

import base64
import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convlab.cli import main
from convlab.insight.gradcam import run_grad_cam
from convlab.scratch.explain import fmt
from convlab.serve.learn import FieldError, conv_steps

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from convlab.serve.webapp import STATIC  # noqa: E402
from webapp_server import png_bytes  # noqa: E402

# --- pages and static files ------------------------------------------------------------------------------

def test_the_index_names_only_files_the_server_has(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    names = re.findall(r'(?:src|href)="static/([^"]+)"', page.text)
    assert {"app.css", "app.js", "predict.js", "runs.js", "learn.js"} <= set(names)
    for name in names:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.content == (STATIC / name).read_bytes()


@pytest.mark.parametrize("name", ["nope.js", "..%2F..%2Fpyproject.toml", "%2Fetc%2Fpasswd"])
def test_an_unknown_static_file_is_a_404_json_error(client, name):
    response = client.get(f"/static/{name}")
    assert response.status_code == 404
    assert "no static file" in response.json()["error"]


def test_the_pages_fetch_nothing_from_outside_and_insert_text_not_html():
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path.name  # no CDN, no site
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", text), path.name


# --- Grad-CAM -------------------------------------------------------------------------------------------

def upload(data: bytes, name: str = "image.png", kind: str = "image/png") -> dict:
    return {"files": {"file": (name, data, kind)}}


def test_gradcam_is_a_png_of_the_input_size_for_the_predicted_class(client, digits_run):
    rng = np.random.default_rng(3)
    pixels = digits_run.test_data().images[5, 0]  # (8, 8)
    big = np.kron(pixels, np.ones((3, 2), np.uint8)) + rng.integers(0, 2, (24, 16)).astype(np.uint8)  # 24 x 16
    response = client.post("/api/gradcam/digits", **upload(png_bytes(big)))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.size == (16, 24) and overlay.mode == "RGB"
    expected = digits_run.predict([Image.fromarray(big)], top_k=1)[0]["top"][0]["label"]
    assert digits_run.classes[int(response.headers["x-gradcam-class-index"])] == expected
    assert response.headers["x-gradcam-layer"] == run_grad_cam(digits_run, pixels[None, None]).layer
    colour = np.asarray(overlay, dtype=int)
    assert np.abs(colour[..., 0] - colour[..., 2]).max() > 20  # the heat map's colours, not the gray input


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def tiff_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.mark.parametrize("path, request_args, status, words", [
    ("/api/gradcam/nope", upload(b"x"), 404, "no model named 'nope'"),
    ("/api/gradcam/..%2F..%2Fetc", upload(b"x"), 404, "no model named '../../etc'"),
    ("/api/gradcam/digits", upload(b"not an image"), 415, "not an image in a format served (PNG, JPEG, WEBP"),
    ("/api/gradcam/digits", upload(tiff_bytes(), "a.tif", "image/tiff"), 415, "not an image in a format served"),
    ("/api/gradcam/digits", upload(bomb_png(10_000, 5_000)), 413, "10000 x 5000 = 50,000,000 pixels is over"),
    ("/api/gradcam/digits", upload(bomb_png(30_000, 30_000)), 413, "decompression bomb"),
    ("/api/gradcam/digits", upload(bomb_png(64, 64)[:40]), 415, "not an image in a format served"),  # cut short
    ("/api/gradcam/digits", {"files": {"other": ("a.png", b"x", "image/png")}}, 422, "one part named 'file'"),
    ("/api/gradcam/digits", {"json": {"file": "a.png"}}, 415, "multipart/form-data"),
    ("/api/gradcam/digits", {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}},
     400, "multipart"),
])
def test_bad_gradcam_requests_are_4xx_json_errors(client, path, request_args, status, words):
    response = client.post(path, **request_args)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_an_upload_over_the_cap_is_413(models):
    """--max-upload-mb holds for the pages' routes too."""
    from fastapi.testclient import TestClient
    from webapp_server import make_app

    with TestClient(make_app(models, max_upload_mb=0.001)) as small:
        response = small.post("/api/gradcam/digits", **upload(png_bytes(np.zeros((64, 64), np.uint8)) + b"\0" * 2000))
    assert response.status_code == 413 and "--max-upload-mb" in response.json()["error"]


# --- the Runs page --------------------------------------------------------------------------------------

def png_of(uri: str) -> bytes:
    assert uri.startswith("data:image/png;base64,")
    return base64.b64decode(uri.split(",", 1)[1])


def test_runs_gives_metrics_json_then_the_pictures_and_the_surest_mistakes(client, digits_run):
    response = client.get("/api/runs/digits")
    assert response.status_code == 200
    doc = response.json()
    assert doc["metrics"] == json.loads((digits_run.path / "metrics.json").read_text())
    assert doc["metrics_source"] == "metrics.json" and doc["model"] == "tiny-cnn" and doc["data"] == "digits"
    assert png_of(doc["curves"]) == (digits_run.path / "curves.png").read_bytes()
    assert Image.open(io.BytesIO(png_of(doc["confusion"]))).size[0] > 200
    test = digits_run.test_data()
    probs = digits_run.predict_arrays(test.images)
    wrong = np.flatnonzero(probs.argmax(1) != test.labels)
    shown = doc["mistakes"]
    assert len(shown) == min(12, len(wrong)) > 0
    assert {m["index"] for m in shown} <= set(wrong.tolist())
    surest_left_out = max((probs[i].max() for i in set(wrong.tolist()) - {m["index"] for m in shown}), default=0)
    assert [m["prob"] for m in shown] == sorted((m["prob"] for m in shown), reverse=True)
    assert shown[-1]["prob"] >= surest_left_out
    for m in shown:
        assert m["true"] == digits_run.classes[test.labels[m["index"]]] != m["predicted"]
        assert m["prob"] == pytest.approx(probs[m["index"]].max())
        assert Image.open(io.BytesIO(png_of(m["gradcam"]))).size == Image.open(io.BytesIO(png_of(m["image"]))).size


def test_runs_of_an_unknown_model_is_a_404_json_error(client):
    response = client.get("/api/runs/..%2Fdigits")
    assert response.status_code == 404 and "no model named '../digits'" in response.json()["error"]


# --- the Learn page -------------------------------------------------------------------------------------

def explain_sums(capsys, *args) -> list[str]:
    """The 'sum = ... = N' lines that `convlab explain conv ARGS` prints."""
    assert main(["explain", "conv", *args]) == 0
    return [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("sum = ")]


def sums_of(doc: dict) -> list[str]:
    return [f"sum = {' + '.join(fmt(v) for row in w['products'] for v in row)} = {fmt(w['sum'])}"
            for w in doc["windows"]]


def test_the_worked_example_has_the_numbers_explain_prints(client, capsys):
    doc = client.post("/api/explain/conv", json={}).json()
    assert sums_of(doc) == explain_sums(capsys)
    assert [w["sum"] for w in doc["windows"][:2]] == [4, 3]  # the second window's sum is 3
    assert doc["output"] == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    second = doc["windows"][1]
    assert (second["row"], second["col"], second["top"], second["left"]) == (0, 1, 0, 1)
    assert second["window"] == [[1, 1, 0], [1, 1, 1], [0, 1, 1]]


def test_own_matrices_stride_padding_and_mode_match_explain(client, capsys):
    body = {"input": "1 2 0 -1; 0.5 1 3 2; 2 0 1 1", "kernel": "1 2; 3 4", "stride": 2, "padding": 1,
            "mode": "convolution"}
    doc = client.post("/api/explain/conv", json=body).json()
    assert sums_of(doc) == explain_sums(capsys, "--input", body["input"], "--kernel", body["kernel"], "--stride",
                                        "2", "--padding", "1", "--mode", "convolution")
    assert doc["slid"] == [[4, 3], [2, 1]] and len(doc["padded"]) == 5
    as_lists = client.post("/api/explain/conv", json={**body, "input": doc["input"], "kernel": doc["kernel"]})
    assert as_lists.json() == doc


@pytest.mark.parametrize("body, status, words", [
    ({"input": "1 2; 3"}, 422, "input: rows have different lengths"),
    ({"kernel": "1 x"}, 422, "kernel: 'x' is not a number"),
    ({"kernel": [[1, "2"]]}, 422, "kernel: '2' is not a number"),
    ({"input": [[1, 2], [3]]}, 422, "input: rows have different lengths"),
    ({"input": "nan 1; 1 1"}, 422, "input: every number must be finite"),
    ({"input": [[10 ** 400, 1]]}, 422, "input: '1000000000"),
    ({"input": 5}, 422, "input: expected rows as text"),
    ({"input": ";".join(["1 " * 17] * 17)}, 422, "input: at most 16x16"),
    ({"kernel": "1 1 1 1 1 1; " * 5 + "1 1 1 1 1 1"}, 422, "kernel: the 6x6 kernel is larger than the 5x5"),
    ({"stride": 0}, 422, "stride: must be a whole number from 1 to 8, got 0"),
    ({"stride": "2"}, 422, "stride: must be a whole number"),
    ({"padding": -1}, 422, "padding: must be a whole number from 0 to 4"),
    ({"padding": True}, 422, "padding: must be a whole number"),
    ({"mode": "fft"}, 422, "mode: must be one of correlation, convolution"),
    ({"mode": ["correlation"]}, 422, "mode: must be one of correlation, convolution, got ['correlation']"),
    ({"strides": 2}, 422, "strides: not a field"),
    ([1, 2], 422, "body: expected a JSON object"),
])
def test_bad_explain_requests_name_the_field(client, body, status, words):
    response = client.post("/api/explain/conv", json=body)
    assert response.status_code == status
    assert words in response.json()["error"]


def test_an_explain_body_that_is_not_json_is_a_400(client):
    response = client.post("/api/explain/conv", content=b"{input: 1", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"].startswith("body: not JSON")


# --- models without a float torch graph -----------------------------------------------------------------

@pytest.fixture(scope="module")
def variants_client(digits_run, tmp_path_factory):
    """The digits run as an .onnx file and as a static int8 variant, served side by side."""
    pytest.importorskip("onnxruntime", reason="the .onnx model needs the onnx extra")
    from fastapi.testclient import TestClient

    from convlab.compress import quantize_run
    from convlab.compress.export import export_onnx
    from webapp_server import make_app, served

    folder = tmp_path_factory.mktemp("variants")
    onnx_path = export_onnx(digits_run, folder / "digits.onnx")
    quantize_run(digits_run.path, folder / "int8", mode="static", calibration_images=64, latency_seconds=0.01)
    models = {"digits-onnx": served("digits-onnx", onnx_path), "digits-int8": served("digits-int8", folder / "int8")}
    with TestClient(make_app(models)) as test_client:
        yield test_client


@pytest.mark.slow
@pytest.mark.parametrize("name, why", [("digits-onnx", "is an .onnx file: it has no torch graph"),
                                       ("digits-int8", "is an int8 variant: its quantized layers have no gradients")])
def test_a_model_without_a_float_graph_has_no_gradcam_but_has_results(variants_client, digits_run, name, why):
    response = variants_client.post(f"/api/gradcam/{name}", **upload(png_bytes(np.zeros((8, 8), np.uint8))))
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"model '{name}' {why}")
    response = variants_client.post(f"/api/attribute/{name}?method=ig", **upload(png_bytes(np.zeros((8, 8), np.uint8))))
    assert response.status_code == 422 and response.json()["error"].startswith(f"model '{name}' is an ")
    assert "ig" in response.json()["error"]
    doc = variants_client.get(f"/api/runs/{name}").json()
    assert doc["metrics"]["accuracy"] == pytest.approx(digits_run.metrics["accuracy"], abs=0.03)
    assert doc["mistakes"] and all(m["gradcam"] is None for m in doc["mistakes"])
    if name == "digits-onnx":  # a lone file: no metrics.json and no curves beside it
        assert doc["metrics_source"] == "measured on the test split"
        assert doc["curves"] is None and "no training curves" in doc["notes"][0]


def test_openapi_describes_the_request_bodies(client):
    paths = client.get("/openapi.json").json()["paths"]
    gradcam = paths["/api/gradcam/{name}"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert gradcam["required"] == ["file"]
    explain = paths["/api/explain/conv"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(explain["properties"]) == {"input", "kernel", "stride", "padding", "mode"}
    assert "/api/runs/{name}" in paths and "/" not in paths and "/static/{filename}" not in paths


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=20)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["input", "kernel", "stride", "padding", "mode", "other"]), JSON_VALUES)
       | JSON_VALUES)
def test_any_json_body_is_answered_or_refused_by_field(body):
    """Whatever JSON arrives, the Learn route answers or names the field: never an unexpected exception (a 500)."""
    try:
        doc = conv_steps(body)
    except FieldError as err:
        named = str(err).split(":")[0]
        assert named in ("input", "kernel", "stride", "padding", "mode", "body") or "not a field" in str(err)
    else:
        assert len(doc["windows"]) == len(doc["output"]) * len(doc["output"][0])


# --- the error table of docs/serving.md -------------------------------------------------------------------

SERVING_DOC = Path(__file__).parents[2] / "docs" / "serving.md"
# a phrase of a row of the web app's error table -> a request that row describes
DOCUMENTED_ERRORS = {
    "a multipart body that cannot be parsed": ("post", "/api/gradcam/digits", {
        "content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}}),
    "an explain body that is not JSON": ("post", "/api/explain/conv", {"content": b"{not json"}),
    "no model of that name": ("post", "/api/gradcam/nope", upload(png_bytes(np.zeros((8, 8), np.uint8)))),
    "no static file of that name": ("get", "/static/nope.js", {}),
    "an upload over 10 MB": ("post", "/api/gradcam/digits", upload(b"\0" * (10 * 1024 * 1024 + 1))),
    "an image over 16,000,000 pixels": ("post", "/api/gradcam/digits", upload(bomb_png(10_000, 5_000))),
    "an explain body over 64 KB": ("post", "/api/explain/conv", {"content": b" " * (64 * 1024 + 1)}),
    "neither `multipart/form-data` nor an `image/*` body": ("post", "/api/attribute/digits",
                                                            {"json": {"file": "a.png"}}),
    "an image that is not PNG, JPEG, WEBP, BMP or GIF": ("post", "/api/gradcam/digits",
                                                         upload(tiff_bytes(), "a.tif", "image/tiff")),
    "no part named `file`": ("post", "/api/gradcam/digits", {"files": {"other": ("a.png", b"x", "image/png")}}),
    "cannot be decoded (truncated or corrupt)": ("post", "/api/gradcam/digits", upload(bomb_png(64, 64))),
    "an unknown `method`": ("post", "/api/attribute/digits?method=nope",
                            upload(png_bytes(np.zeros((8, 8), np.uint8)))),
    "an explain field that cannot be used": ("post", "/api/explain/conv", {"json": {"stride": 0}}),
}


def documented_error_rows() -> dict[int, str]:
    """The web app's error table in docs/serving.md: {status: when}."""
    lines = SERVING_DOC.read_text().splitlines()
    start = lines.index("| status | when |") + 2
    rows = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        status, when = (cell.strip() for cell in line.strip("|").split("|", 1))
        rows[int(status)] = when
    return rows


def test_every_row_of_the_documented_error_table_has_a_request_here():
    rows = documented_error_rows()
    assert set(rows) == {400, 404, 413, 415, 422}
    for status, when in rows.items():
        assert any(phrase in when for phrase in DOCUMENTED_ERRORS), f"no request here for the {status} row"


@pytest.mark.parametrize("phrase", DOCUMENTED_ERRORS)
def test_the_documented_error_table_gives_the_status_the_server_answers(client, phrase):
    """Each clause of docs/serving.md's error table, sent to the server: its status is the row's."""
    documented = [status for status, when in documented_error_rows().items() if phrase in when]
    assert len(documented) == 1, f"{phrase!r} is in {len(documented)} rows of the table"
    method, path, request_args = DOCUMENTED_ERRORS[phrase]
    response = getattr(client, method)(path, **request_args)
    assert response.status_code == documented[0], (phrase, response.text)
    assert response.json()["error"]
