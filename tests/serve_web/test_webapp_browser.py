"""The web app in headless Chromium against a real uvicorn server on 127.0.0.1: Predict, Runs and Learn as a
person uses them, with no console error and no failed request."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from webapp_server import live_server, make_app  # noqa: E402
from convlab.insight.attribution import METHODS  # noqa: E402


@pytest.mark.slow
def test_predict_gradcam_runs_and_learn_in_a_browser(browser_page, models, right_digit, tmp_path):
    page, problems = browser_page
    png, label = right_digit
    (tmp_path / "digit.png").write_bytes(png)
    with live_server(make_app(models)) as url:
        page.goto(url + "/", wait_until="load")
        assert page.title() == "convlab serve"
        page.wait_for_selector("#predict-model option[value=digits]", state="attached")
        assert page.text_content("#predict-accuracy").startswith("test accuracy ")

        # Predict: the right label on top, then the Grad-CAM overlay beside the image
        page.set_input_files("#predict-files", str(tmp_path / "digit.png"))
        top = page.wait_for_selector(".prediction .bar-row .label")
        assert top.text_content() == label
        assert page.text_content(".prediction .name") == "digit.png"
        page.check("#predict-gradcam")
        page.wait_for_function("() => { const img = document.querySelector('.prediction img.gradcam');"
                               " return img && !img.hidden && img.complete && img.naturalWidth === 8; }")
        assert page.is_visible(".prediction img.gradcam")
        assert page.get_attribute(".prediction img.gradcam", "title").startswith("gradcam for ")

        # another method of the menu: integrated gradients' overlay replaces Grad-CAM's
        assert page.input_value("#predict-method") == "gradcam"
        page.select_option("#predict-method", "ig")
        page.wait_for_function("() => { const img = document.querySelector('.prediction img.gradcam');"
                               " return img.title.startsWith('ig for ') && img.complete && img.naturalWidth === 8; }")
        assert page.text_content("#predict-method-note").startswith("(x - x')")
        page.wait_for_function("() => /^ig: \\d+ ms for 1 image$/.test("
                               "document.querySelector('#predict-method-status').textContent)")
        page.select_option("#predict-method", "guided-gradcam")
        assert page.text_content("#predict-method-note") == f"warning: {METHODS['guided-gradcam'].warning}"

        # Runs: results first, then the pictures
        page.click("nav a[data-page=runs]")
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.includes('accuracy')")
        assert page.locator("#runs-classes tbody tr").count() == 10
        page.wait_for_function("() => ['runs-curves', 'runs-confusion'].every(id => {"
                               " const img = document.getElementById(id); return img.complete && img.naturalWidth > 0; })")
        assert page.locator("#runs-mistakes figure").count() >= 1
        assert page.get_attribute("#runs-mistakes img.explain", "alt").startswith("gradcam of test image ")
        page.select_option("#runs-method", "lrp")  # the mistakes explained by another method of the menu
        page.wait_for_function("() => /^lrp: \\d+ ms for \\d+ images?$/.test("
                               "document.querySelector('#runs-method-status').textContent)")
        assert page.get_attribute("#runs-mistakes img.explain", "alt").startswith("lrp of test image ")
        assert page.text_content("#runs-method-note") == ""
        page.select_option("#runs-method", "guided-backprop")
        assert page.text_content("#runs-method-note").startswith("warning: guided-backprop failed")
        page.wait_for_function("() => /^guided-backprop: /.test("
                               "document.querySelector('#runs-method-status').textContent)")

        # Learn: the worked example, stepped to its second window
        page.click("nav a[data-page=learn]")
        page.wait_for_function("() => document.querySelector('#learn-sum').textContent.endsWith('= 4')")
        page.click("#learn-next")
        assert page.text_content("#learn-position") == "window 2 of 9: output row 0, column 1"
        assert page.text_content("#learn-sum") == "sum = 1 + 0 + 0 + 0 + 1 + 0 + 0 + 0 + 1 = 3"
        highlighted = page.eval_on_selector_all("#learn-grid-input td.on", "cells => cells.map(c => c.textContent)")
        assert highlighted == ["1", "1", "0", "1", "1", "1", "0", "1", "1"]  # rows 0-2, columns 1-3

        assert problems == []

        # an error from the server is shown as text on the page (and is the only problem the browser saw)
        page.fill("#learn-kernel", "1 2; 3")
        page.click("#learn-run")
        page.wait_for_function("() => document.querySelector('#learn-error').textContent !== ''")
        assert page.text_content("#learn-error").startswith("kernel: rows have different lengths")
    assert problems[0] == f"422: {url}/api/explain/conv"
    assert all("422" in problem for problem in problems[1:]), problems  # Chromium's console line of the same


@pytest.mark.slow
def test_a_server_with_a_token_asks_for_it_once(browser_page, models):
    page, problems = browser_page
    with live_server(make_app(models, token="s3cret")) as url:
        page.goto(url + "/", wait_until="load")
        page.wait_for_function("() => document.querySelector('#predict-error').textContent !== ''")
        assert page.text_content("#predict-error").startswith("missing or wrong token")
        assert page.text_content("#predict-error").endswith("enter the server's token at the top of the page")
        assert page.is_visible("#token-form")
        assert problems[0] == f"401: {url}/api/models"
        problems.clear()
        page.fill("#token", "s3cret")
        page.click("#token-form button")
        page.wait_for_selector("#predict-model option[value=digits]", state="attached")
        assert page.text_content("#predict-error") == "" and not page.is_visible("#token-form")
    assert problems == []


@pytest.mark.slow
def test_the_runs_page_says_why_an_int8_model_has_no_maps(browser_page, models, digits_run, tmp_path):
    """Switching from a model whose mistakes were explained to one without a float graph replaces the status
    line (it used to keep the other model's 'saliency: N ms ...') with the reason."""
    from convlab.compress import quantize_run
    from webapp_server import served

    page, problems = browser_page
    quantize_run(digits_run.path, tmp_path / "int8", mode="static", calibration_images=64, latency_seconds=0.01)
    both = {**models, "digits-int8": served("digits-int8", tmp_path / "int8")}
    with live_server(make_app(both)) as url:
        page.goto(url + "/", wait_until="load")
        page.click("nav a[data-page=runs]")
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.includes('accuracy')")
        page.select_option("#runs-method", "saliency")
        page.wait_for_function("() => /^saliency: \\d+ ms/.test(document.querySelector('#runs-method-status')"
                               ".textContent)")
        page.select_option("#runs-model", "digits-int8")
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.startsWith('digits-int8')")
        page.wait_for_function("() => document.querySelector('#runs-method-status').textContent !== ''")
        assert page.text_content("#runs-method-status") == (
            "no Grad-CAM or attribution maps: digits-int8 is an int8 variant: its quantized layers have no "
            "gradients for Grad-CAM; serve the float run folder")
        assert page.locator("#runs-mistakes img.explain").count() == 0
    assert problems == []
