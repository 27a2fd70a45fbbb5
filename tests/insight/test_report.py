"""The HTML report: self-contained, every section present, and it renders in headless Chromium."""
from __future__ import annotations

import re

import pytest

from browser import open_page
from convlab.insight.report import build_report

@pytest.fixture(scope="module")
def report(digits_run, tmp_path_factory):
    return build_report(digits_run.path, tmp_path_factory.mktemp("report") / "report.html")


def test_report_is_self_contained_with_every_section(report):
    page = report.read_text()
    for heading in ("Config", "Dataset", "Samples per class", "Training curves", "Test metrics",
                    "Confusion matrix", "Per class", "Most confident mistakes", "Attribution"):
        assert f">{heading}" in page, heading
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) >= 5
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)  # nothing fetched from anywhere
    assert "<script" not in page


@pytest.mark.slow
def test_report_defaults_to_the_run_folder(digits_run_copy):
    path = build_report(digits_run_copy.path)
    assert path == digits_run_copy.path / "report.html" and path.stat().st_size > 10_000


def test_results_come_before_the_config(report):
    page = report.read_text()
    config = page.index("<h2>Config")
    for results in ("<h2>Test metrics", "<h2>Per class", "<h2>Training curves", "<h2>Confusion matrix"):
        assert page.index(results) < config, results
    assert page.index("<h2>Config") < page.index("<h2>Dataset")


def test_attribution_section_has_the_maps_and_the_scores(report):
    pytest.importorskip("captum")
    page = report.read_text()
    section = page[page.index("<h2>Attribution"):page.index("<h2>Config")]
    assert 'alt="attribution maps"' in section
    rows = re.findall(r"<tr><td>([a-z +]+)</td><td class=num>(0\.\d{3})</td><td class=num>(0\.\d{3})</td>",
                      section)
    assert [name for name, _, _ in rows] == ["random map", "gradcam", "saliency", "ig"]
    assert "on 48 test images drawn from each class in proportion" in section


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report):
    with open_page() as (page, errors):
        page.goto(report.as_uri(), wait_until="load")
        images = page.evaluate("""() => Array.from(document.images).map(img => ({
            alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}))""")
        title = page.title()
    assert errors == []
    assert title.startswith("convlab report")
    assert len(images) >= 5 and "attribution maps" in [img["alt"] for img in images]
    undecoded = [img["alt"] for img in images if not (img["complete"] and img["width"] > 0 and img["height"] > 0)]
    assert undecoded == []
