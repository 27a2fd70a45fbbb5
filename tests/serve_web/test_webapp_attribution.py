"""The Predict page's explain overlay: every attribution method of the registry as a PNG of the image's size,
the menu's list from the server, and 4xx JSON errors (unknown method, no torch graph, missing libraries)."""
from __future__ import annotations

import base64
import io
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from convlab.insight.attribution import METHODS, attribute  # noqa: E402
from webapp_server import png_bytes  # noqa: E402


def upload(data: bytes) -> dict:
    return {"files": {"file": ("image.png", data, "image/png")}}


@pytest.fixture(scope="module")
def big_digit(digits_run):
    """A test digit enlarged to 24 x 16 (H x W), so the overlay's size is the upload's, not the model's 8 x 8."""
    pixels = digits_run.test_data().images[5, 0]
    return np.kron(pixels, np.ones((3, 2), np.uint8))


def test_the_menu_lists_the_registry_with_gradcam_the_default(client):
    doc = client.get("/api/attribute-methods").json()
    assert doc["default"] == "gradcam"
    assert [m["name"] for m in doc["methods"]] == list(METHODS)
    by_name = {m["name"]: m for m in doc["methods"]}
    assert by_name["guided-gradcam"]["warning"] == METHODS["guided-gradcam"].warning
    assert by_name["ig"]["signed"] and not by_name["saliency"]["signed"]


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_is_a_png_overlay_of_the_image_size_for_the_predicted_class(client, digits_run, big_digit,
                                                                                 method):
    pytest.importorskip("captum", reason="the attribution methods need the attribution extra")
    pytest.importorskip("zennit", reason="the attribution methods need the attribution extra")
    response = client.post("/api/attribute/digits", params={"method": method}, **upload(png_bytes(big_digit)))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.size == (16, 24) and overlay.mode == "RGB"
    assert response.headers["x-attribution-method"] == method
    assert float(response.headers["x-attribution-ms"]) > 0
    expected = digits_run.predict([Image.fromarray(big_digit)], top_k=1)[0]["top"][0]["label"]
    assert digits_run.classes[int(response.headers["x-attribution-class-index"])] == expected
    colour = np.asarray(overlay, dtype=int)
    assert np.abs(colour[..., 0] - colour[..., 2]).max() > 20  # the map's colours, not the gray input


def test_a_signed_map_is_red_where_it_is_for_the_class_and_blue_where_against(client, digits_run):
    """The overlay of ig at the model's own size: red over pixels with positive evidence, blue over negative
    ones, as `convlab attribute`'s figures colour them; the map itself is the library's (convlab.attribute)."""
    pytest.importorskip("captum", reason="the attribution methods need the attribution extra")
    pixels = digits_run.test_data().images[5, 0]
    response = client.post("/api/attribute/digits?method=ig", **upload(png_bytes(pixels)))
    assert response.status_code == 200, response.text
    colour = np.asarray(Image.open(io.BytesIO(response.content)), dtype=int)
    heat = attribute(digits_run, pixels[None, None], "ig", log=lambda _line: None).maps["ig"][0]
    top = np.percentile(np.abs(heat), 99)
    redder = colour[..., 0] - colour[..., 2]
    assert (redder[heat > 0.3 * top] > 0).all() and (redder[heat < -0.3 * top] < 0).all()
    assert (heat > 0.3 * top).any() and (heat < -0.3 * top).any()


@pytest.mark.parametrize("path, words", [
    ("/api/attribute/digits?method=nope", "method 'nope': not an attribution method; choose one of saliency, gradcam"),
    ("/api/attribute/digits?method=ig,saliency", "method 'ig,saliency': not an attribution method"),
    ("/api/attribute/nope?method=ig", "no model named 'nope'"),
])
def test_an_unknown_method_or_model_is_a_json_error_naming_the_choices(client, path, words):
    response = client.post(path, **upload(png_bytes(np.zeros((8, 8), np.uint8))))
    assert response.status_code == (404 if "/nope?" in path else 422)
    assert words in response.json()["error"]
    if "nope'" not in words:
        assert all(name in response.json()["error"] for name in METHODS)


def test_a_bad_upload_is_the_same_4xx_json_error_as_gradcam(client):
    response = client.post("/api/attribute/digits?method=ig", **upload(b"not an image"))
    assert response.status_code == 415 and "not an image in a format served" in response.json()["error"]
    response = client.post("/api/attribute/digits?method=ig", json={"file": "a.png"})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["error"]


def test_without_captum_the_error_says_what_to_install(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum...` raises ImportError, as when missing
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    response = client.post("/api/attribute/digits?method=saliency", **upload(png_bytes(np.zeros((8, 8), np.uint8))))
    assert response.status_code == 422
    assert "pip install -e '.[attribution]'" in response.json()["error"]
    assert response.json()["error"].startswith("model 'digits': saliency needs captum")


def test_a_method_that_fails_on_the_model_is_its_one_line_422(client, monkeypatch):
    """A ConvlabError from a method (here lrp refusing a layer it has no rule for) is the 422's message."""
    from convlab.insight.attribution import methods

    monkeypatch.setattr(methods, "LRP_LAYERS", (), raising=True)  # no layer has a rule now
    response = client.post("/api/attribute/digits?method=lrp", **upload(png_bytes(np.zeros((8, 8), np.uint8))))
    assert response.status_code == 422
    message = response.json()["error"]
    assert message.startswith("model 'digits': lrp: layer ") and "has no LRP rule" in message
    assert "\n" not in message



def test_samples_and_steps_set_the_methods_work_as_in_the_library(client, digits_run):
    """?samples= and ?steps= are Settings.samples and .steps: the overlay is the map `convlab.attribute` gives
    with them (lime with 20 samples, not its default 200), and values out of range are a 422 naming them."""
    pytest.importorskip("captum", reason="the attribution methods need the attribution extra")
    from convlab.insight.attribution import Settings

    pixels = digits_run.test_data().images[5, 0]
    few = client.post("/api/attribute/digits?method=lime&samples=20", **upload(png_bytes(pixels)))
    default = client.post("/api/attribute/digits?method=lime", **upload(png_bytes(pixels)))
    assert few.status_code == default.status_code == 200
    assert few.content != default.content
    heat = attribute(digits_run, pixels[None, None], "lime", settings=Settings(samples=20),
                     log=lambda _line: None).maps["lime"][0]
    redder = np.asarray(Image.open(io.BytesIO(few.content)), dtype=int)[..., 0] - \
        np.asarray(Image.open(io.BytesIO(few.content)), dtype=int)[..., 2]
    top = np.abs(heat).max()
    assert (redder[heat > 0.3 * top] > 0).all() and (redder[heat < -0.3 * top] < 0).all()
    assert client.post("/api/attribute/digits?method=ig&steps=4", **upload(png_bytes(pixels))).status_code == 200
    for query, field in [("samples=0", "query.samples"), ("samples=100000", "query.samples"),
                         ("steps=0", "query.steps"), ("steps=x", "query.steps")]:
        response = client.post(f"/api/attribute/digits?method=lime&{query}", **upload(png_bytes(pixels)))
        assert response.status_code == 422 and response.json()["error"].startswith(field), response.text


def test_the_runs_mistakes_drawn_with_a_method_are_its_maps_on_those_test_images(client, digits_run):
    """GET /api/mistakes/{name}?method= : the mistakes of /api/runs, in its order, each an overlay of the
    image the page shows; ig's overlay is red where `convlab.attribute` gives the image's map positive."""
    pytest.importorskip("captum", reason="the attribution methods need the attribution extra")
    from convlab.evaluate.pictures import enlarged

    shown = client.get("/api/runs/digits").json()["mistakes"]
    response = client.get("/api/mistakes/digits?method=ig")
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["method"] == "ig" and doc["ms"] > 0
    assert [m["index"] for m in doc["mistakes"]] == [m["index"] for m in shown]
    images = digits_run.test_data().images[[m["index"] for m in shown]]
    maps = attribute(digits_run, images, "ig", log=lambda _line: None).maps["ig"]
    for m, image, heat in zip(doc["mistakes"], images, maps):
        colour = np.asarray(Image.open(io.BytesIO(base64.b64decode(m["overlay"].split(",", 1)[1]))), dtype=int)
        assert colour.shape[:2] == enlarged(image).shape[:2]
        scale = colour.shape[0] // heat.shape[0]
        middle = slice(scale // 2, None, scale)  # each map pixel's block centre: the bilinear resize keeps it
        redder = (colour[..., 0] - colour[..., 2])[middle, middle]
        top = np.abs(maps).max()  # one colour scale over the mistakes
        assert (redder[heat > 0.3 * top] > 0).all() and (redder[heat < -0.3 * top] < 0).all()
    assert client.get("/api/mistakes/digits?method=ig").json() == doc  # computed once per method


@pytest.mark.parametrize("path, status, words", [
    ("/api/mistakes/digits?method=nope", 422, "method 'nope': not an attribution method; choose one of saliency"),
    ("/api/mistakes/digits?method=lime&samples=0", 422, "query.samples"),
    ("/api/mistakes/..%2Fdigits?method=ig", 404, "no model named '../digits'"),
])
def test_the_mistakes_route_refuses_with_4xx_json(client, path, status, words):
    response = client.get(path)
    assert response.status_code == status and words in response.json()["error"], response.text
