"""The Learn page's upsampling route: the stamps `convlab explain upsample` prints, each running output against
F.conv_transpose2d, fields refused by name; and the stepper in headless Chromium, whose numbers are torch's."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from browser import open_page  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from webapp_server import live_server, make_app  # noqa: E402

from convlab.scratch.explain import fmt  # noqa: E402
from convlab.serve.learn import FieldError, upsample_stamps  # noqa: E402

EXAMPLE_INPUT, EXAMPLE_KERNEL = [[1, 2], [3, 4]], [[1, 1, 1], [1, 2, 1], [1, 1, 1]]


def transposed(image, kernel, stride=2, padding=0) -> np.ndarray:
    x = torch.tensor(np.asarray(image, dtype=np.float64))[None, None]
    k = torch.tensor(np.asarray(kernel, dtype=np.float64))[None, None]
    return F.conv_transpose2d(x, k, stride=stride, padding=padding)[0, 0].numpy()


def first_cells(shape, k) -> np.ndarray:
    """1 on the input cells stamped after k steps (row by row), 0 elsewhere."""
    return (np.arange(shape[0] * shape[1]) < k).reshape(shape).astype(np.float64)


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app({})) as test_client:  # the Learn page needs no model
        yield test_client


def test_the_example_stamp_by_stamp(client):
    doc = client.post("/api/explain/upsample", json={}).json()
    assert doc["input"] == EXAMPLE_INPUT and doc["kernel"] == EXAMPLE_KERNEL and doc["stride"] == 2
    assert doc["output"] == doc["reference"] == transposed(EXAMPLE_INPUT, EXAMPLE_KERNEL).tolist() and doc["same"]
    for k, stamp in enumerate(doc["stamps"], start=1):
        assert stamp["after"] == transposed(np.multiply(EXAMPLE_INPUT, first_cells((2, 2), k)), EXAMPLE_KERNEL).tolist()
        assert stamp["covered"] == transposed(first_cells((2, 2), k), np.ones((3, 3))).tolist()
    assert doc["stamps"][3] | {"after": None, "covered": None} == {
        "row": 1, "col": 1, "value": 4, "top": 2, "left": 2, "stamp": [[4, 4, 4], [4, 8, 4], [4, 4, 4]],
        "after": None, "covered": None}
    assert doc["even"] is False and doc["evenness"].startswith("uneven: the stride 2 does not divide")


def test_own_matrices_as_text_or_lists_with_padding(client):
    body = {"input": "1 0 2; 0 1 0; 3 0 1", "kernel": [[1, 1, 1, 1]] * 4, "stride": 2, "padding": 1}
    doc = client.post("/api/explain/upsample", json=body).json()
    expected = transposed([[1, 0, 2], [0, 1, 0], [3, 0, 1]], np.ones((4, 4)), 2, 1)
    assert doc["output"] == expected.tolist() and np.shape(doc["stamps"][-1]["after"]) == (8, 8)
    assert doc["even"] is True and doc["evenness"] == "even: away from the border every cell is covered 4 times"


@pytest.mark.parametrize("body, words", [
    ({"input": "1 2; 3"}, "input: rows have different lengths"),
    ({"input": [[1] * 7]}, "input: at most 6x6 numbers here, got 1x7"),
    ({"kernel": [[1] * 6] * 6}, "kernel: at most 5x5 numbers here, got 6x6"),
    ({"kernel": [["a"]]}, "kernel: 'a' is not a number"),
    ({"stride": 0}, "stride: must be a whole number from 1 to 4, got 0"),
    ({"stride": 2.5}, "stride: must be a whole number from 1 to 4, got 2.5"),
    ({"padding": 3}, "padding: padding 3 cuts 3 rows and columns from each side of the 5x5 output"),
    ({"padding": -1}, "padding: must be a whole number from 0 to 4"),
    ({"input": [[1e308, 1e308]], "kernel": [[10]]}, "input: the stamps' sums overflow float64"),
    ({"mode": "bilinear"}, "mode: not a field; the fields are input, kernel, stride, padding"),
    ([1], "body: expected a JSON object"),
])
def test_bad_fields_are_a_422_naming_the_field(client, body, words):
    response = client.post("/api/explain/upsample", content=json.dumps(body),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert words in response.json()["error"]


def test_any_small_body_is_answered_or_refused_by_field():
    for body in ({"input": [[1e308] * 2], "kernel": [[1e308]]}, {"input": [[None]]}, {"stride": True},
                 {"kernel": [[10 ** 400]]}, None, {"input": [[]]}, {"padding": 4, "stride": 4}):
        try:
            doc = upsample_stamps(body)
        except FieldError as err:
            assert str(err).split(":")[0] in ("input", "kernel", "stride", "padding", "body")
        else:
            json.dumps(doc, allow_nan=False)  # as the route answers it: every number finite


NUMBERS = st.integers(-10 ** 6, 10 ** 6) | st.floats(allow_nan=True, allow_infinity=True)
ROWS = st.lists(st.lists(NUMBERS, min_size=0, max_size=7), max_size=7)
FIELD_VALUES = ROWS | st.text(max_size=20) | st.integers(-5, 10) | st.floats() | st.none() | st.booleans()


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["input", "kernel", "stride", "padding", "other"]), FIELD_VALUES))
def test_any_json_body_is_answered_or_refused_by_field(body):
    """Whatever arrives, the upsample route answers with finite numbers equal to torch's, or names the field."""
    try:
        doc = upsample_stamps(body)
    except FieldError as err:
        assert str(err).split(":")[0] in ("input", "kernel", "stride", "padding", "body", "other")
    else:
        json.dumps(doc, allow_nan=False)
        assert doc["same"] and np.allclose(doc["output"], doc["reference"], rtol=1e-9, atol=1e-12)


def test_openapi_describes_the_upsample_body(client):
    paths = client.get("/openapi.json").json()["paths"]
    schema = paths["/api/explain/upsample"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"input", "kernel", "stride", "padding"}


def grid_numbers(page, table: str) -> list[list[float]]:
    return page.eval_on_selector_all(f"#{table} tr", "rows => rows.map(r => [...r.cells].map(c => Number(c.textContent)))")


def wait_for_step_0(page) -> None:
    page.wait_for_function("() => document.querySelector('#upsample-position').textContent.startsWith('the output')")


@pytest.mark.slow
def test_the_upsample_stepper_in_a_browser():
    with open_page() as (page, problems), live_server(make_app({})) as url:
        page.goto(url + "/#learn", wait_until="load")
        wait_for_step_0(page)
        assert page.text_content("#upsample-position") == "the output starts empty: 5x5 cells, (n - 1) x stride + " \
                                                          "kernel size"
        assert grid_numbers(page, "upsample-grid-output") == np.zeros((5, 5)).tolist()
        assert page.is_disabled("#upsample-prev")

        # each stamp: the running output and the overlap counts are torch's on the cells stamped so far
        for k in range(1, 5):
            page.click("#upsample-next")
            cells = first_cells((2, 2), k)
            assert grid_numbers(page, "upsample-grid-output") == \
                transposed(np.multiply(EXAMPLE_INPUT, cells), EXAMPLE_KERNEL).tolist()
            assert grid_numbers(page, "upsample-grid-counts") == transposed(cells, np.ones((3, 3))).tolist()
        assert page.text_content("#upsample-position") == "stamp 4 of 4: input (1,1) = 4 times the kernel, added at " \
                                                          "rows 2-4, columns 2-4"
        assert grid_numbers(page, "upsample-grid-stamp") == [[4, 4, 4], [4, 8, 4], [4, 4, 4]]
        assert page.locator("#upsample-grid-output td.on").count() == 9
        assert page.text_content("#upsample-result").endswith("torch.nn.functional.conv_transpose2d: the same")
        assert page.is_disabled("#upsample-next")
        page.click("#upsample-prev")
        assert page.text_content("#upsample-result") == ""

        # the switch: a 3x3 kernel of ones covers the cells unevenly (the checkerboard), a 4x4 one evenly
        page.fill("#upsample-input", "1 1 1\n1 1 1\n1 1 1")
        page.check("input[name=upsample-size][value='3']")
        page.wait_for_function("() => document.querySelector('#upsample-grid-output').rows.length === 7")
        while not page.is_disabled("#upsample-next"):
            page.click("#upsample-next")
        counts3 = transposed(np.ones((3, 3)), np.ones((3, 3)))
        assert grid_numbers(page, "upsample-grid-counts") == grid_numbers(page, "upsample-grid-output") == \
            counts3.tolist()
        assert [fmt(v) for v in counts3[2, 1:6]] == ["2", "4", "2", "4", "2"]
        assert page.text_content("#upsample-evenness").startswith("kernel 3x3, stride 2: uneven")
        page.check("input[name=upsample-size][value='4']")
        page.wait_for_function("() => document.querySelector('#upsample-grid-output').rows.length === 8")
        while not page.is_disabled("#upsample-next"):
            page.click("#upsample-next")
        assert grid_numbers(page, "upsample-grid-counts") == transposed(np.ones((3, 3)), np.ones((4, 4))).tolist()
        assert page.text_content("#upsample-evenness") == "kernel 4x4, stride 2: even: away from the border every " \
                                                          "cell is covered 4 times"
        assert problems == []

        # the server's refusal is shown as text on the page
        page.fill("#upsample-padding", "9")
        page.click("#upsample-run")
        page.wait_for_function("() => document.querySelector('#upsample-error').textContent !== ''")
        assert page.text_content("#upsample-error").startswith("padding: must be a whole number from 0 to 4")
    assert problems[0] == f"422: {url}/api/explain/upsample"
