"""The web app's ?samples=&steps= are the attribution Settings' fields, with Settings' ranges."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")
from convlab.insight.attribution import Settings  # noqa: E402
from webapp_server import png_bytes  # noqa: E402


@pytest.mark.parametrize("name", ["samples", "steps"])
def test_the_query_ranges_are_the_settings_ranges(client, digits_run, name):
    pytest.importorskip("captum", reason="the attribution methods need the attribution extra")
    low, high = Settings.ranges[name]
    upload = {"files": {"file": ("image.png", png_bytes(digits_run.test_data().images[5, 0]), "image/png")}}
    for value in (low - 1, high + 1):
        response = client.post(f"/api/attribute/digits?method=gradcam&{name}={value}", **upload)
        assert response.status_code == 422 and response.json()["error"].startswith(f"query.{name}"), response.text
    assert client.post(f"/api/attribute/digits?method=gradcam&{name}={high}", **upload).status_code == 200
    assert client.get(f"/api/mistakes/digits?method=gradcam&{name}={high + 1}").status_code == 422
