"""Fixtures of the web app's tests: the digits run served under the name 'digits' in the test app."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")

from webapp_standins import make_app, png_bytes, served  # noqa: E402


@pytest.fixture(scope="module")
def models(digits_run):
    return {"digits": served("digits", digits_run.path)}


@pytest.fixture(scope="module")
def client(models):
    from fastapi.testclient import TestClient

    with TestClient(make_app(models)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def right_digit(digits_run):
    """(PNG bytes, label) of a test image the run classifies correctly."""
    test = digits_run.test_data()
    predicted = digits_run.predict_arrays(test.images).argmax(1)
    i = int(np.flatnonzero(predicted == test.labels)[0])
    return png_bytes(test.images[i, 0]), digits_run.classes[test.labels[i]]
