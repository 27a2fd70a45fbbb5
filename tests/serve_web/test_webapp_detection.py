"""The web app with a detection run: its Runs results (mAP, per-class AP, PR curves), the refusal of maps,
and in headless Chromium the Predict page's boxes drawn over the uploaded image and the Runs page's mAP."""
from __future__ import annotations

import httpx
import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from browser import open_page  # noqa: E402
from webapp_server import live_server, make_app, served  # noqa: E402

pytestmark = pytest.mark.slow  # the shapes run they share trains for ~20 s


@pytest.fixture(scope="module")
def both(models, shapes_run):
    return {**models, "shapes": served("shapes", shapes_run.path)}


@pytest.fixture(scope="module")
def shape_png(tmp_path_factory):
    from serve.detection_run import fresh_shapes

    return fresh_shapes(tmp_path_factory.mktemp("shapes-web"), count=1)[0]


def test_runs_results_of_a_detection_run(both, shapes_run):
    from fastapi.testclient import TestClient

    with TestClient(make_app(both)) as client:
        doc = client.get("/api/runs/shapes").json()
        assert doc["task"] == "detect" and doc["metrics"]["map"] == shapes_run.metrics["map"]
        assert set(doc["metrics"]["per_class_ap"]) == set(shapes_run.classes)
        assert doc["pr_curves"].startswith("data:image/png;base64,") and doc["mistakes"] == []
        assert "is a detection run" in doc["no_maps"]
        assert client.get("/api/runs/digits").json()["task"] == "classify"


@pytest.mark.parametrize("method, url", [("post", "/api/gradcam/shapes"), ("post", "/api/attribute/shapes"),
                                         ("post", "/api/attribute/shapes?method=ig"),
                                         ("get", "/api/mistakes/shapes")])
def test_maps_are_refused_for_a_detection_run(both, shape_png, method, url):
    from fastapi.testclient import TestClient

    with TestClient(make_app(both)) as client:
        files = [("file", ("s.png", shape_png.read_bytes(), "image/png"))] if method == "post" else None
        answer = getattr(client, method)(url, files=files) if files else client.get(url)
        assert answer.status_code == 422
        assert answer.json()["error"].startswith("no Grad-CAM or attribution maps: shapes is a detection run")


def test_predict_draws_the_boxes_and_runs_shows_map(both, shape_png):
    with open_page() as (page, problems), live_server(make_app(both)) as url:
        expected = httpx.post(f"{url}/predict/shapes?conf=0.25&iou=0.5",
                              files=[("file", (shape_png.name, shape_png.read_bytes(), "image/png"))]).json()[0]
        assert expected["boxes"], "the run finds the shapes of the image"
        page.goto(url + "/", wait_until="load")
        page.wait_for_selector("#predict-model option[value=shapes]", state="attached")
        page.select_option("#predict-model", "shapes")
        assert page.text_content("#predict-accuracy").startswith("test mAP ")
        assert page.is_visible("#predict-conf") and not page.is_visible("#predict-topk")
        assert not page.is_visible("#predict-gradcam")  # no attribution for a detector

        page.set_input_files("#predict-files", str(shape_png))
        page.wait_for_selector(".card.detection .boxes .box")
        drawn = page.eval_on_selector(".card.detection .frame", """frame => {
            const img = frame.querySelector('img').getBoundingClientRect();
            return Array.from(frame.querySelectorAll('.boxes .box')).map(box => {
              const r = box.getBoundingClientRect();  // where the box lies on the picture, in the image's pixels
              return {label: box.dataset.label, tag: box.querySelector('.tag').textContent,
                      box: [r.left - img.left, r.top - img.top, r.right - img.left, r.bottom - img.top].map(
                        (v, i) => v * 64 / (i % 2 ? img.height : img.width))}; }); }""")
        assert [d["label"] for d in drawn] == [b["label"] for b in expected["boxes"]]
        assert [d["tag"] for d in drawn] == [f"{b['label']} {b['score']:.2f}" for b in expected["boxes"]]
        for d, b in zip(drawn, expected["boxes"]):
            assert d["box"] == pytest.approx(b["box"], abs=0.25)  # a quarter of an image pixel: 1.25 px shown

        page.fill("#predict-conf", "1")  # nothing scores 1: the boxes go, the list says so
        page.dispatch_event("#predict-conf", "change")
        page.wait_for_function("() => !document.querySelector('.card.detection .boxes .box')")
        assert page.text_content(".card.detection .note") == "no box above the score threshold"

        page.click("nav a[data-page=runs]")
        page.wait_for_selector("#runs-model option[value=shapes]", state="attached")
        page.select_option("#runs-model", "shapes")
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.includes('mAP')")
        assert page.text_content("#runs-summary").startswith("shapes (")
        assert page.eval_on_selector_all("#runs-classes th", "cells => cells.map(c => c.textContent)") == [
            "class", "AP@[.5:.95]"]
        assert page.locator("#runs-classes tbody tr").count() == 3
        page.wait_for_function("() => { const img = document.getElementById('runs-pr');"
                               " return !img.hidden && img.complete && img.naturalWidth > 0; }")
        assert not page.is_visible("#runs-method")  # mistakes explained by maps: a classifier's
        page.select_option("#runs-model", "digits")  # and back: the classifier's page as before
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.includes('accuracy')")
        assert page.is_visible("#runs-method") and not page.is_visible("#runs-pr")
        assert problems == []
