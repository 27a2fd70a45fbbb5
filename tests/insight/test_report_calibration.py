"""The report's calibration section (ECE, NLL, before -> after temperature, the reliability diagram) and a
multi-label run's report (metrics, a row per label with its threshold, no single-label sections)."""
from __future__ import annotations

import base64
import html
import json
import re
import shutil

import pytest
import torch

from convlab.errors import ConvlabError
from convlab.insight.report import build_report


def read_json(path):
    return json.loads(path.read_text())


def section(page: str, heading: str) -> str:
    """The HTML from <h2>heading to the next <h2>."""
    start = page.index(f"<h2>{heading}</h2>")
    end = page.find("<h2>", start + 1)
    return page[start:end if end >= 0 else len(page)]


def image(page: str, alt: str) -> bytes:
    """The PNG embedded in `page` with this alt text."""
    found = re.findall(rf'<img src="data:image/png;base64,([^"]+)" alt="{re.escape(alt)}"', page)
    assert len(found) == 1, f"{len(found)} images with alt {alt!r}"
    return base64.b64decode(found[0])


@pytest.fixture(scope="module")
def digits_report(digits_run, tmp_path_factory):
    return build_report(digits_run.path, tmp_path_factory.mktemp("report") / "report.html", methods=[]).read_text()


@pytest.fixture(scope="module")
def multilabel_report(multilabel_run, tmp_path_factory):
    return build_report(multilabel_run.path, tmp_path_factory.mktemp("report") / "report.html").read_text()


def test_a_classifier_report_has_the_ece_nll_and_reliability_diagram(digits_report, digits_run):
    metrics = read_json(digits_run.path / "metrics.json")
    assert "before_temperature" not in metrics  # digits_run fitted no temperature: one value each
    calibration = section(digits_report, "Calibration")
    assert f"ECE <b>{metrics['ece']:.4f}</b>, NLL {metrics['nll']:.4f} nats" in calibration
    assert "->" not in calibration
    assert image(calibration, "reliability diagram") == (digits_run.path / "reliability.png").read_bytes()
    assert digits_report.index("<h2>Calibration") < digits_report.index("<h2>Config")


def test_the_report_draws_the_diagram_when_the_run_folder_has_none(digits_run, tmp_path):
    from PIL import Image
    import io

    folder = shutil.copytree(digits_run.path, tmp_path / "digits")
    (folder / "reliability.png").unlink()
    page = build_report(folder, tmp_path / "report.html", methods=[]).read_text()
    drawn = Image.open(io.BytesIO(image(section(page, "Calibration"), "reliability diagram")))
    assert drawn.size == Image.open(digits_run.path / "reliability.png").size


@pytest.fixture(scope="module")
def temperature_run(tmp_path_factory):
    """A digits run with a temperature fitted on validation (metrics.json has before_temperature)."""
    from convlab import train

    threads = torch.get_num_threads()
    try:
        return train(data="digits", model="tiny-cnn", epochs=1, threads=1, calibrate="temperature", quiet=True,
                     out=str(tmp_path_factory.mktemp("runs") / "digits-t"))
    finally:
        torch.set_num_threads(threads)


def test_a_fitted_temperature_shows_before_and_after(temperature_run, tmp_path):
    metrics = read_json(temperature_run.path / "metrics.json")
    before = metrics["before_temperature"]
    page = build_report(temperature_run.path, tmp_path / "report.html", methods=[]).read_text()
    calibration = section(page, "Calibration")
    assert "before -> after the temperature fitted on validation" in calibration
    assert (f"ECE <b>{before['ece']:.4f} -> {metrics['ece']:.4f}</b>, NLL {before['nll']:.4f} -> "
            f"{metrics['nll']:.4f} nats") in calibration
    assert image(calibration, "reliability diagram") == (temperature_run.path / "reliability.png").read_bytes()


def label_rows(page: str) -> dict[str, list[str]]:
    """{label: its cells} of the report's per-label table."""
    table = section(page, "Per label")
    rows = re.findall(r"<tr(?: class=\"low\")?><td>([^<]+)</td>((?:<td class=num>[^<]*</td>)+)</tr>", table)
    return {html.unescape(name): re.findall(r"<td class=num>([^<]*)</td>", cells) for name, cells in rows}


def test_a_multilabel_report_has_a_row_per_label_with_its_threshold(multilabel_report, multilabel_run):
    metrics = read_json(multilabel_run.path / "metrics.json")
    thresholds = read_json(multilabel_run.path / "preprocess.json")["thresholds"]
    rows = label_rows(multilabel_report)
    assert list(rows) == multilabel_run.classes
    for i, (name, row) in enumerate(metrics["per_label"].items()):
        assert rows[name] == [f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                              f"{row['ap']:.3f}", str(row["support"]), f"{thresholds[i]:.3f}"], name
    head = section(multilabel_report, "Test metrics")
    assert (f"test mean AP <b>{metrics['mean_ap']:.4f}</b>, micro F1 {metrics['micro_f1']:.4f}" in head
            and f"subset accuracy {metrics['subset_accuracy']:.4f}, Hamming loss {metrics['hamming_loss']:.4f} "
                f"on {metrics['num_samples']} images" in head)


def test_a_multilabel_report_has_calibration_and_no_single_label_sections(multilabel_report, multilabel_run):
    metrics = read_json(multilabel_run.path / "metrics.json")
    calibration = section(multilabel_report, "Calibration")
    assert f"ECE <b>{metrics['ece']:.4f}</b>, NLL {metrics['nll']:.4f} nats" in calibration
    assert "(test image, label) pair" in calibration
    assert image(calibration, "reliability diagram") == (multilabel_run.path / "reliability.png").read_bytes()
    for absent in ("Confusion matrix", "Most confident mistakes", "Attribution"):
        assert f"<h2>{absent}" not in multilabel_report, absent
    for present in ("Training curves", "Config", "Dataset"):
        assert f"<h2>{present}</h2>" in multilabel_report, present
    dataset = section(multilabel_report, "Dataset")
    assert "(an image may have several)" in dataset and 'alt="samples"' in dataset


def test_a_multilabel_report_refuses_attribution_methods(multilabel_run, tmp_path):
    with pytest.raises(ConvlabError, match="report --method is not available for multilabel runs"):
        build_report(multilabel_run.path, tmp_path / "report.html", methods=["gradcam"])
    assert not (tmp_path / "report.html").exists()


def test_a_multilabel_report_without_its_data_reads_metrics_json(multilabel_run, tmp_path):
    folder = shutil.copytree(multilabel_run.path, tmp_path / "squares")
    config = folder / "config.yaml"
    name = multilabel_run.config.data.name
    config.write_text(config.read_text().replace(name, f"csv:{tmp_path / 'gone.csv'}", 1))
    page = build_report(folder, tmp_path / "report.html").read_text()
    assert "the dataset could not be loaded here" in section(page, "Dataset")
    metrics = read_json(multilabel_run.path / "metrics.json")
    assert list(label_rows(page)) == list(metrics["per_label"])
    assert f"ECE <b>{metrics['ece']:.4f}</b>" in section(page, "Calibration")
