"""The Learn page's NMS route: the rounds `convlab explain nms` prints, torchvision's kept boxes, fields refused
by name; and the stepper in headless Chromium, whose kept boxes are torchvision's."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import nms

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from browser import open_page  # noqa: E402
from cli_output import run_cli  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from webapp_server import live_server, make_app  # noqa: E402

from convlab.detection.explain import EXAMPLE_BOXES, parse_scored_boxes  # noqa: E402
from convlab.scratch.explain import fmt  # noqa: E402
from convlab.serve.learn import FieldError, nms_rounds  # noqa: E402


def torchvision_kept(boxes, scores, threshold) -> list[int]:
    return nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64),
               threshold).tolist()


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app({})) as test_client:  # the Learn page needs no model
        yield test_client


def round_lines(doc: dict) -> list[str]:
    """The rounds as `convlab explain nms` prints them, rebuilt from the route's numbers."""
    t, lines = fmt(doc["iou"]), []
    for number, r in enumerate(doc["rounds"], start=1):
        lines.append(f"round {number}: keep box {r['best']} (score {fmt(doc['scores'][r['best']])})")
        lines += [f"  box {c['index']}: IoU with box {r['best']} = {fmt(c['iou'])} "
                  + (f"> {t}, suppressed" if c["suppressed"] else f"<= {t}, stays") for c in r["compared"]]
    return lines


def printed_round_lines(capsys, *args) -> list[str]:
    code, out, _ = run_cli(capsys, "explain", "nms", *args)
    assert code == 0
    return [line.split(", the best left")[0] for line in out.splitlines() if line.startswith("round ")
            or " IoU with box " in line]


def test_the_example_has_the_rounds_explain_prints_and_torchvisions_kept_boxes(client, capsys):
    doc = client.post("/api/explain/nms", json={}).json()
    boxes, scores, _ = parse_scored_boxes(EXAMPLE_BOXES)
    assert doc["kept"] == doc["reference"] == torchvision_kept(boxes, scores, 0.5) == [0, 3, 5]
    assert doc["boxes"] == [list(box) for box in boxes] and doc["scores"] == scores and doc["iou"] == 0.5
    assert round_lines(doc) == printed_round_lines(capsys)
    assert doc["rounds"][0]["compared"][1] == {"index": 1, "iou": pytest.approx(0.7762, abs=1e-4), "suppressed": True}


def test_own_boxes_as_text_or_lists_and_a_threshold(client, capsys):
    text = "0 0 10 10 0.6; 1 1 11 11 0.9; 30 30 40 40 0.5; 2 0 12 10 0.6"
    doc = client.post("/api/explain/nms", json={"boxes": text, "iou": 0.6}).json()
    boxes, scores, _ = parse_scored_boxes(text)
    assert doc["kept"] == torchvision_kept(boxes, scores, 0.6)
    assert round_lines(doc) == printed_round_lines(capsys, "--boxes", text, "--iou", "0.6")
    rows = [[*box, score] for box, score in zip(doc["boxes"], doc["scores"])]
    assert client.post("/api/explain/nms", json={"boxes": rows, "iou": 0.6}).json() == doc


def test_boxes_with_classes_are_compared_within_their_class(client):
    rows = [[0, 0, 10, 10, 0.9, 0], [1, 1, 11, 11, 0.8, 1], [1, 0, 11, 10, 0.7, 0]]
    doc = client.post("/api/explain/nms", json={"boxes": rows}).json()
    assert doc["classes"] == [0, 1, 0] and doc["kept"] == doc["reference"] == [0, 1]
    assert [c["index"] for c in doc["rounds"][0]["compared"]] == [2]
    assert client.post("/api/explain/nms", json={}).json()["classes"] is None


def test_a_lower_threshold_keeps_fewer(client):
    assert client.post("/api/explain/nms", json={"iou": 0.2}).json()["kept"] == [0, 3]


@pytest.mark.parametrize("body, words", [
    ({"boxes": "0 0 10 10"}, "boxes: box 0 ('0 0 10 10'): expected 5 or 6 numbers (x1 y1 x2 y2 score, then "
                                  "optionally a class), got 4"),
    ({"boxes": "0 0 10 10 0.5; 9 0 1 10 0.5"}, "boxes: box 1 ('9 0 1 10 0.5'): x2 > x1 and y2 > y1 are needed"),
    ({"boxes": ""}, "boxes: no boxes"),
    ({"boxes": [[0, 0, 10, 10]]}, "boxes: box 0 ([0, 0, 10, 10]): expected 5 numbers [x1, y1, x2, y2, score], "
                                   "or 6 with a class"),
    ({"boxes": [[0, 0, 10, 10, "0.5"]]}, "boxes: box 0"),
    ({"boxes": [[0, 10, 10, 0, 0.5]]}, "boxes: box 0: x2 > x1 and y2 > y1 are needed"),
    ({"boxes": [[0, 0, 10, 10, float("inf")]]}, "boxes: box 0"),
    ({"boxes": [[0, 0, 10, 10, 0.5, 0], [0, 0, 10, 10, 0.5]]}, "boxes: box 0 has a class and box 1 has none"),
    ({"boxes": [[0, 0, 10, 10, 0.5, 0.5]]}, "boxes: box 0: the class must be a whole number from 0 to"),
    ({"boxes": [[-1e300, 0, 1e300, 1, 0.5]]}, "boxes: box 0: every corner must be a number from -1e+09 to 1e+09"),
    ({"boxes": [[0, 0, 1e-200, 1e-200, 0.5]]}, "boxes: box 0: the box is too small to measure"),
    ({"boxes": []}, "boxes: expected text"),
    ({"boxes": {"a": 1}}, "boxes: expected text"),
    ({"boxes": "; ".join(["0 0 10 10 0.5"] * 21)}, "boxes: at most 20 here, got 21"),
    ({"iou": 1.5}, "iou: must be a number from 0 to 1, got 1.5"),
    ({"iou": "0.5"}, "iou: must be a number from 0 to 1, got '0.5'"),
    ({"iou": True}, "iou: must be a number"),
    ({"score": 1}, "score: not a field; the fields are boxes, iou"),
    ([1], "body: expected a JSON object with any of boxes, iou"),
])
def test_bad_fields_are_a_422_naming_the_field(client, body, words):
    response = client.post("/api/explain/nms", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert words in response.json()["error"]


def test_a_body_that_is_not_json_is_a_400(client):
    response = client.post("/api/explain/nms", content=b"{boxes", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"].startswith("body: not JSON")


def test_any_list_of_rows_is_answered_or_refused_by_field():
    for body in ({"boxes": [[1, 2, 3, 4, 5]] * 3, "iou": 0}, {"boxes": [None]}, {"boxes": [[True] * 5]},
                 {"iou": None}, {"boxes": [[10 ** 400, 0, 1, 1, 1]]}, None, "x",
                 {"boxes": [[0, 0, 1e9, 1e9, 1e308, 0], [-1e9, -1e9, 1e9, 1e9, -1e308, 10 ** 6]]}):
        try:
            doc = nms_rounds(body)
        except FieldError as err:
            assert str(err).split(":")[0] in ("boxes", "iou", "body")
        else:
            assert doc["kept"] == doc["reference"]
            json.dumps(doc, allow_nan=False)  # as the route answers it: every number finite


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
                           lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner,
                                                                                        max_size=3), max_leaves=30)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["boxes", "iou", "other"]), JSON_VALUES) | JSON_VALUES)
def test_any_json_body_is_answered_or_refused_by_field(body):
    """Whatever JSON arrives, the NMS route answers with finite numbers or names the field: never a 500."""
    try:
        doc = nms_rounds(body)
    except FieldError as err:
        assert str(err).split(":")[0] in ("boxes", "iou", "body") or "not a field" in str(err)
    else:
        assert doc["kept"] == doc["reference"]
        json.dumps(doc, allow_nan=False)


def test_openapi_describes_the_nms_body(client):
    paths = client.get("/openapi.json").json()["paths"]
    schema = paths["/api/explain/nms"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"boxes", "iou"}


def kept_on_the_page(page) -> list[int]:
    return sorted(int(i) for i in page.eval_on_selector_all("#nms-picture g.kept",
                                                           "groups => groups.map(g => g.dataset.index)"))


def step_to_the_end(page) -> None:
    while not page.is_disabled("#nms-next"):
        page.click("#nms-next")


@pytest.mark.slow
def test_the_nms_stepper_in_a_browser():
    boxes, scores, _ = parse_scored_boxes(EXAMPLE_BOXES)
    with open_page() as (page, problems), live_server(make_app({})) as url:
        page.goto(url + "/#learn", wait_until="load")
        page.wait_for_function("() => document.querySelector('#nms-position').textContent.startsWith('sorted')")
        assert page.text_content("#nms-position") == "sorted by score: 0 (0.92), 3 (0.88), 1 (0.81), 4 (0.7), " \
                                                      "2 (0.64), 5 (0.55)"
        assert page.locator("#nms-picture g.waiting").count() == 6 and page.is_disabled("#nms-prev")

        # round 1: box 0 kept, boxes 1 and 2 suppressed with their IoU shown
        page.click("#nms-next")
        assert page.text_content("#nms-position").startswith("round 1 of 3: keep box 0 (score 0.92)")
        assert page.get_attribute("#nms-picture g[data-index='0']", "class") == "kept best"
        suppressed = page.eval_on_selector_all("#nms-picture g.suppressed", "gs => gs.map(g => g.textContent)")
        assert sorted(suppressed) == ["1: 0.81IoU 0.7762", "2: 0.64IoU 0.5866"]
        assert "box 1: IoU with box 0 = 0.7762 > 0.5, suppressed" in page.text_content("#nms-compared")

        # to the end: the kept boxes are torchvision's; back one round and they are not all kept yet
        step_to_the_end(page)
        assert kept_on_the_page(page) == sorted(torchvision_kept(boxes, scores, 0.5)) == [0, 3, 5]
        assert page.text_content("#nms-kept") == "kept: 0, 3, 5; torchvision.ops.nms keeps 0, 3, 5: the same"
        assert page.locator("#nms-picture g.gone").count() == 3  # suppressed in earlier rounds, greyed
        page.click("#nms-prev")
        assert kept_on_the_page(page) == [0, 3]

        # a lower threshold: box 5 now overlaps box 0 too much
        page.fill("#nms-iou", "0.2")
        page.click("#nms-run")
        page.wait_for_function("() => document.querySelector('#nms-position').textContent.startsWith('sorted')")
        step_to_the_end(page)
        assert kept_on_the_page(page) == sorted(torchvision_kept(boxes, scores, 0.2)) == [0, 3]
        assert page.text_content("#nms-kept").startswith("kept: 0, 3;")
        assert problems == []

        # boxes with classes: box 1 overlaps box 0 but is of another class, so it stays
        page.fill("#nms-boxes", "0 0 10 10 0.9 0\n1 1 11 11 0.8 1\n1 0 11 10 0.7 0")
        page.fill("#nms-iou", "0.5")
        page.click("#nms-run")
        page.wait_for_function("() => document.querySelector('#nms-picture g').textContent.includes('class')")
        step_to_the_end(page)
        assert kept_on_the_page(page) == [0, 1]
        assert page.text_content("#nms-kept") == "kept: 0, 1; torchvision.ops.batched_nms keeps 0, 1: the same"
        assert problems == []

        # the server's refusal is shown as text on the page
        page.fill("#nms-boxes", "0 0 10 10 0.9\n5 5 1 1 0.5")
        page.click("#nms-run")
        page.wait_for_function("() => document.querySelector('#nms-error').textContent !== ''")
        assert page.text_content("#nms-error").startswith("boxes: box 1 ('5 5 1 1 0.5'): x2 > x1")
    assert problems[0] == f"422: {url}/api/explain/nms"
