"""A multi-label run on the pages: the Runs JSON and page (per-label table with the thresholds of
preprocess.json, ECE, reliability diagram; no confusion matrix or mistakes) and the Predict page (the labels at
or above their thresholds, or none); a classifier's Runs JSON with its calibration."""
from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from webapp_server import live_server, make_app, png_bytes, served  # noqa: E402


def png_of(uri: str) -> bytes:
    assert uri.startswith("data:image/png;base64,")
    return base64.b64decode(uri.split(",", 1)[1])


def read_json(path):
    return json.loads(path.read_text())


def shown(text: str, decimals: int) -> list:
    """The numbers printed with `decimals` places in `text`, as approx values (JavaScript's toFixed rounds a
    tie up where Python's format rounds it to even)."""
    return [pytest.approx(float(found), abs=0.5001 * 10 ** -decimals)
            for found in re.findall(rf"\d+\.\d{{{decimals}}}\b", text)]


@pytest.fixture(scope="module")
def strict_run(multilabel_run, tmp_path_factory):
    """A copy of multilabel_run whose thresholds are all 1.0: no label of any image reaches its threshold."""
    folder = shutil.copytree(multilabel_run.path, tmp_path_factory.mktemp("strict") / "strict")
    preprocess = read_json(folder / "preprocess.json")
    preprocess["thresholds"] = [1.0] * len(multilabel_run.classes)
    (folder / "preprocess.json").write_text(json.dumps(preprocess))
    return folder


@pytest.fixture(scope="module")
def ml_models(models, multilabel_run, strict_run):
    """The multi-label run first (the pages open on it), the strict copy, then the digits classifier."""
    return {"squares": served("squares", multilabel_run.path), "strict": served("strict", strict_run),
            **models}


@pytest.fixture(scope="module")
def ml_client(ml_models):
    from fastapi.testclient import TestClient

    with TestClient(make_app(ml_models)) as test_client:
        yield test_client


def labelled_test_image(run) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """((H, W, 3) uint8, [(label, prob, threshold)] most probable first) of the first test image the run gives
    two labels or more."""
    from convlab.multilabel.run import label_predictions

    images = run.test_data().images
    found = label_predictions(run.predict_arrays(images), run.classes, run.thresholds, [None] * len(images), 1)
    i = next(i for i, answer in enumerate(found) if len(answer["labels"]) >= 2)
    return (np.transpose(images[i], (1, 2, 0)),
            [(entry["label"], entry["prob"], entry["threshold"]) for entry in found[i]["labels"]])


# --- the Runs JSON ---------------------------------------------------------------------------------------------

def test_runs_json_of_a_classifier_has_its_calibration(ml_client, digits_run):
    doc = ml_client.get("/api/runs/digits").json()
    metrics = read_json(digits_run.path / "metrics.json")
    assert doc["task"] == "classify"
    calibration = doc["calibration"]
    assert calibration["ece"] == metrics["ece"] and calibration["nll"] == metrics["nll"]
    assert calibration["before_temperature"] == metrics.get("before_temperature")
    assert png_of(calibration["reliability"]) == (digits_run.path / "reliability.png").read_bytes()
    assert doc["confusion"] and doc["mistakes"]  # the single-label parts are still there


def test_runs_json_of_a_multilabel_run(ml_client, multilabel_run):
    doc = ml_client.get("/api/runs/squares").json()
    metrics = read_json(multilabel_run.path / "metrics.json")
    thresholds = read_json(multilabel_run.path / "preprocess.json")["thresholds"]
    assert doc["task"] == "multilabel" and doc["metrics_source"] == "metrics.json"
    assert doc["metrics"] == metrics
    assert [row["threshold"] for row in doc["metrics"]["per_label"].values()] == pytest.approx(thresholds)
    assert doc["calibration"]["ece"] == metrics["ece"] and doc["calibration"]["nll"] == metrics["nll"]
    assert png_of(doc["calibration"]["reliability"]) == (multilabel_run.path / "reliability.png").read_bytes()
    assert png_of(doc["curves"]) == (multilabel_run.path / "curves.png").read_bytes()
    assert doc["confusion"] is None and doc["mistakes"] == []
    assert any("an image has several labels" in note for note in doc["notes"])
    assert not any("thresholds" in note for note in doc["notes"])  # metrics.json's are preprocess.json's


def test_runs_json_says_when_the_thresholds_changed_since_the_metrics(ml_client):
    doc = ml_client.get("/api/runs/strict").json()
    assert any("predictions use preprocess.json's [1.0, 1.0, 1.0]" in note for note in doc["notes"])


def test_the_reliability_diagram_is_drawn_when_the_run_folder_has_none(multilabel_run, tmp_path):
    from PIL import Image
    import io

    from convlab.serve.results import ModelViews

    folder = shutil.copytree(multilabel_run.path, tmp_path / "copy")
    (folder / "reliability.png").unlink()
    doc = ModelViews("copy", folder, multilabel_run.metrics).results()
    drawn = Image.open(io.BytesIO(png_of(doc["calibration"]["reliability"])))
    assert drawn.size == Image.open(multilabel_run.path / "reliability.png").size


# --- the pages in Chromium -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_runs_and_predict_pages_of_a_multilabel_model(browser_page, ml_models, multilabel_run, tmp_path):
    page, problems = browser_page
    metrics = read_json(multilabel_run.path / "metrics.json")
    thresholds = read_json(multilabel_run.path / "preprocess.json")["thresholds"]
    pixels, expected = labelled_test_image(multilabel_run)
    (tmp_path / "squares.png").write_bytes(png_bytes(pixels))
    assert [t for _, _, t in expected] == [thresholds[multilabel_run.classes.index(name)] for name, _, _ in expected]

    with live_server(make_app(ml_models)) as url:
        page.goto(url + "/", wait_until="load")
        page.wait_for_selector("#predict-model option[value=squares]", state="attached")
        accuracy = page.text_content("#predict-accuracy")
        assert accuracy.startswith("test mean AP ") and ", micro F1 " in accuracy
        assert [metrics["mean_ap"], metrics["micro_f1"]] == shown(accuracy, 3)
        assert page.is_visible("#predict-topk") and not page.is_visible("#predict-gradcam")

        # Predict: every label at or above its threshold, with its probability and threshold
        page.set_input_files("#predict-files", str(tmp_path / "squares.png"))
        page.wait_for_selector(".card.multilabel .bars.labels")
        rows = page.eval_on_selector_all(".card.multilabel .bars.labels .bar-row", """rows => rows.map(row =>
            [row.querySelector('.label').textContent, row.querySelector('.prob').textContent])""")
        assert [name for name, _ in rows] == [name for name, _, _ in expected]
        assert all(re.fullmatch(r"\d\.\d{3} ≥ \d\.\d{3}", text) for _, text in rows), rows
        assert [[p, t] for _, p, t in expected] == [shown(text, 3) for _, text in rows]
        assert page.locator(".card.multilabel .none").count() == 0

        # the same image with every threshold at 1.0: no label
        page.select_option("#predict-model", "strict")
        page.wait_for_selector(".card.multilabel .none")
        assert page.text_content(".card.multilabel .none") == "no label above its threshold"
        assert page.locator(".card.multilabel .bars.labels").count() == 0

        # Runs: the metrics, the per-label table with preprocess.json's thresholds, ECE and the diagram
        page.click("nav a[data-page=runs]")
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.includes('mean AP')")
        summary = page.text_content("#runs-summary")
        assert re.search(r"test mean AP \S+, micro F1 \S+, macro F1 \S+, subset accuracy \S+, Hamming loss \S+ on "
                         rf"{metrics['num_samples']} images \(metrics.json\)", summary), summary
        assert shown(summary, 4) == [metrics[key] for key in
                                     ("mean_ap", "micro_f1", "macro_f1", "subset_accuracy", "hamming_loss")]
        heads = page.eval_on_selector_all("#runs-classes thead th", "cells => cells.map(c => c.textContent)")
        assert heads == ["label", "precision", "recall", "F1", "AP", "support", "threshold"]
        table = page.eval_on_selector_all("#runs-classes tbody tr",
                                          "rows => rows.map(r => Array.from(r.cells, c => c.textContent))")
        assert [cells[0] for cells in table] == list(metrics["per_label"]) == multilabel_run.classes
        assert [cells[5] for cells in table] == [str(row["support"]) for row in metrics["per_label"].values()]
        assert [shown(" ".join(cells[1:5] + cells[6:]), 3) for cells in table] == [
            [row["precision"], row["recall"], row["f1"], row["ap"], thresholds[i]]
            for i, row in enumerate(metrics["per_label"].values())]
        calibration = page.text_content("#runs-calibration")
        assert calibration.startswith("test ECE ") and "->" not in calibration  # no temperature: one value each
        assert shown(calibration, 4) == [metrics["ece"], metrics["nll"]]
        page.wait_for_function("() => ['runs-curves', 'runs-reliability'].every(id => {"
                               " const img = document.getElementById(id);"
                               " return img.complete && img.naturalWidth > 0; })")
        assert not page.is_visible("#runs-confusion") and not page.is_visible("#runs-mistakes")
        assert "an image has several labels" in page.text_content("#runs-notes")

        # a classifier after it: its own table, its ECE, the confusion matrix back
        digits_metrics = read_json(ml_models["digits"].path / "metrics.json")
        page.select_option("#runs-model", "digits")
        page.wait_for_function("() => document.querySelector('#runs-summary').textContent.includes('accuracy')")
        assert page.locator("#runs-classes tbody tr").count() == 10
        assert shown(page.text_content("#runs-calibration"), 4) == [digits_metrics["ece"], digits_metrics["nll"]]
        page.wait_for_function("() => document.getElementById('runs-confusion').naturalWidth > 0")
        assert page.is_visible("#runs-confusion")
    assert problems == []
