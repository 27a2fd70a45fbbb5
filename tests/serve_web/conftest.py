"""Fixtures of the web app's tests: the digits run served under the name 'digits' in the test app."""
from __future__ import annotations

import numpy as np
import pytest

NEEDS_SERVE = "the web app needs the serve extra (pip install -e '.[serve]')"


@pytest.fixture(scope="module")
def models(digits_run):
    pytest.importorskip("fastapi", reason=NEEDS_SERVE)
    from webapp_server import served

    return {"digits": served("digits", digits_run.path)}


@pytest.fixture(scope="module")
def client(models):
    from fastapi.testclient import TestClient
    from webapp_server import make_app

    with TestClient(make_app(models)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def right_digit(digits_run):
    """(PNG bytes, label) of a test image the run classifies correctly."""
    from webapp_server import png_bytes

    test = digits_run.test_data()
    predicted = digits_run.predict_arrays(test.images).argmax(1)
    i = int(np.flatnonzero(predicted == test.labels)[0])
    return png_bytes(test.images[i, 0]), digits_run.classes[test.labels[i]]


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory):
    """The small detection run the server tests train (once per session, shared with tests/serve)."""
    from serve.detection_run import trained_shapes_run

    return trained_shapes_run(tmp_path_factory)


@pytest.fixture
def browser_page():
    """(a fresh headless Chromium page, the problems it saw): the browser tests' page (tests/browser.py)."""
    from browser import open_page

    with open_page() as (page, problems):
        yield page, problems
