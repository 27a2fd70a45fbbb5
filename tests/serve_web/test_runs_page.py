"""The Runs page's results: a page view never downloads a dataset, and the explained mistakes are kept in a
small cache keyed on what each method reads."""
from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra (pip install -e '.[serve]')")


def test_the_runs_page_never_downloads_a_dataset(digits_run_copy, monkeypatch):
    """A run trained on MNIST, served where MNIST was never downloaded: the page says the data is missing."""
    from convlab.data import download
    from convlab.serve.results import ModelViews

    config = digits_run_copy.path / "config.yaml"
    config.write_text(config.read_text().replace("name: digits", "name: mnist", 1))
    fetched = []
    monkeypatch.setattr(download, "_fetch_with_retries", lambda url, *_args: fetched.append(url))
    doc = ModelViews("mnist-run", digits_run_copy.path, digits_run_copy.metrics).results()
    assert fetched == []
    assert doc["mistakes"] == [] and doc["metrics"] == digits_run_copy.metrics
    assert any("mnist is not downloaded here" in note and "convlab eval RUN" in note for note in doc["notes"])


def test_the_explained_mistakes_are_kept_per_what_the_method_reads(digits_run, monkeypatch):
    """samples changes lime's maps, not saliency's; steps changes ig's: a key holds only those, and at most
    MISTAKE_OVERLAYS drawings are kept (each is a dozen PNGs)."""
    from convlab.insight.attribution import Settings
    from convlab.serve.results import ModelViews

    drawn = []
    monkeypatch.setattr(ModelViews, "_draw_mistakes", staticmethod(
        lambda run, shown, method, settings: drawn.append((method, settings)) or {"method": method}))
    view = ModelViews("digits", digits_run.path, digits_run.metrics)
    for samples in (10, 20):
        view.mistake_overlays("saliency", Settings(samples=samples))
        view.mistake_overlays("lime", Settings(samples=samples))
    view.mistake_overlays("lime", Settings(samples=20, steps=5))
    assert [(method, s.samples) for method, s in drawn] == [("saliency", 10), ("lime", 10), ("lime", 20)]
    for steps in range(1, 13):
        view.mistake_overlays("ig", Settings(steps=steps))
    assert len(drawn) == 3 + 12 and len(view._overlays) <= 8
    view.mistake_overlays("ig", Settings(steps=12, samples=99))  # the last drawn is kept
    assert len(drawn) == 15
