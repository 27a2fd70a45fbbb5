"""The web app with a segmentation run: its Runs results (mIoU, Dice, pixel accuracy, per-class IoU, figures),
the refusal of maps, and in headless Chromium the Predict page's mask laid over the uploaded image on a canvas
(legend, opacity slider) and the Runs page's mIoU."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from browser import open_page  # noqa: E402
from webapp_server import live_server, make_app, served  # noqa: E402

pytestmark = pytest.mark.slow  # the module's run trains for ~15 s


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    from serve.segmentation_run import trained_mask_run

    return trained_mask_run(tmp_path_factory.mktemp("mask-run-web"))


@pytest.fixture(scope="module")
def both(models, mask_run):
    return {**models, "masks": served("masks", mask_run.path)}


@pytest.fixture(scope="module")
def mask_png(tmp_path_factory):
    from serve.segmentation_run import fresh_masks

    return fresh_masks(tmp_path_factory.mktemp("masks-web"), count=1)[0].path


def test_runs_results_of_a_segmentation_run(both, mask_run):
    from fastapi.testclient import TestClient

    with TestClient(make_app(both)) as client:
        doc = client.get("/api/runs/masks").json()
        assert doc["task"] == "segment" and doc["metrics"]["miou"] == mask_run.metrics["miou"]
        assert list(doc["metrics"]["per_class_iou"]) == mask_run.classes
        for figure in ("curves", "class_iou", "worst_images"):
            assert doc[figure].startswith("data:image/png;base64,"), figure
        assert doc["mistakes"] == [] and doc["notes"] == []
        assert "is a segmentation run" in doc["no_maps"]


@pytest.mark.parametrize("method, url", [("post", "/api/gradcam/masks"), ("post", "/api/attribute/masks?method=ig"),
                                         ("get", "/api/mistakes/masks")])
def test_maps_are_refused_for_a_segmentation_run(both, mask_png, method, url):
    from fastapi.testclient import TestClient

    with TestClient(make_app(both)) as client:
        files = [("file", ("s.png", mask_png.read_bytes(), "image/png"))]
        answer = client.post(url, files=files) if method == "post" else client.get(url)
        assert answer.status_code == 422
        assert answer.json()["error"].startswith("no Grad-CAM or attribution maps: masks is a segmentation run")


CANVAS_PIXEL = """([x, y]) => Array.from(document.querySelector('.card.segmentation canvas.overlay')
                                    .getContext('2d').getImageData(x, y, 1, 1).data)"""


def test_predict_overlays_the_mask_with_a_legend_and_runs_shows_miou(both, mask_run, mask_png):
    from convlab.segmentation.figures import PALETTE

    with open_page() as (page, problems), live_server(make_app(both)) as url:
        expected = httpx.post(f"{url}/predict/masks?mask=rle",
                              files=[("file", (mask_png.name, mask_png.read_bytes(), "image/png"))]).json()[0]
        truth = mask_run.predict([mask_png])[0]["mask"]
        found = np.argwhere(truth > 0)
        assert len(found), "the run finds a shape in the image"
        (y, x), (by, bx) = found[len(found) // 2], np.argwhere(truth == 0)[0]
        image = np.asarray(Image.open(mask_png).convert("RGB"), np.float64)
        page.goto(url + "/", wait_until="load")
        page.wait_for_selector("#predict-model option[value=masks]", state="attached")
        page.select_option("#predict-model", "masks")
        assert page.text_content("#predict-accuracy").startswith(f"test mIoU {mask_run.metrics['miou']:.3f}")
        assert page.is_visible("#predict-opacity") and not page.is_visible("#predict-topk")
        assert not page.is_visible("#predict-gradcam") and not page.is_visible("#predict-conf")

        page.set_input_files("#predict-files", str(mask_png))
        page.wait_for_selector(".card.segmentation .legend li")
        assert page.eval_on_selector_all(".legend li", "items => items.map(i => i.dataset.label)") == list(
            expected["pixels"])
        swatch = page.eval_on_selector(f".legend li[data-label={mask_run.classes[truth[y, x]]}] .swatch",
                                       "s => getComputedStyle(s).backgroundColor")
        assert swatch == f"rgb({', '.join(map(str, PALETTE[truth[y, x]]))})"  # the figures' palette
        colour = PALETTE[truth[y, x]].astype(np.float64)
        for opacity in (0.5, 1.0, 0.2):
            page.eval_on_selector("#predict-opacity", "(input, value) => { input.value = value; "
                                  "input.dispatchEvent(new Event('input')); }", str(opacity))
            shown = page.evaluate(CANVAS_PIXEL, [int(x), int(y)])
            assert shown[:3] == pytest.approx((1 - opacity) * image[y, x] + opacity * colour, abs=2)
            assert page.evaluate(CANVAS_PIXEL, [int(bx), int(by)])[:3] == pytest.approx(image[by, bx], abs=1)
        assert page.text_content("#predict-opacity-value") == "0.20"

        page.click("nav a[data-page=runs]")
        page.wait_for_selector("#runs-model option[value=masks]", state="attached")
        page.select_option("#runs-model", "masks")
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.includes('mIoU')")
        assert f"test mIoU {mask_run.metrics['miou']:.4f}" in page.text_content("#runs-summary")
        assert page.eval_on_selector_all("#runs-classes th", "cells => cells.map(c => c.textContent)") == [
            "class", "IoU", "Dice"]
        assert page.locator("#runs-classes tbody tr").count() == len(mask_run.classes)
        page.wait_for_function("() => { const img = document.getElementById('runs-class-iou');"
                               " return !img.hidden && img.complete && img.naturalWidth > 0; }")
        assert not page.is_visible("#runs-confusion") and not page.is_visible("#runs-method")
        page.select_option("#runs-model", "digits")  # and back: the classifier's page as before
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.includes('accuracy')")
        assert page.is_visible("#runs-confusion") and not page.is_visible("#runs-class-iou")
        assert problems == []
