"""`convlab serve --tta`: every request of a classifier averaged over the views as `convlab predict --tta`
averages them, on /predict (routed and fast path) and OIP; bad values and other tasks refused in one line."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch

from convlab.cli import main
from convlab.errors import ConvlabError

from .conftest import running_server


def predict_json(capsys, run_dir, paths, *flags) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", str(run_dir), *map(str, paths), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def served_tta(digits_run):
    """The digits run served with --tta five-crop and with --tta flip."""
    from convlab.serve.served import load_served

    return {tta: load_served(tta, digits_run.path, tta=tta) for tta in ("flip", "five-crop")}


@pytest.fixture
def tta_client(make_client, served_tta, served):
    """A TestClient over the digits run served three ways: 'digits' (no TTA), 'flip' and 'five-crop'."""
    return make_client({"digits": served, **served_tta})


@pytest.mark.parametrize("tta", ["flip", "five-crop"])
def test_predict_equals_the_cli_with_tta(tta_client, digits_run, digit_pngs, capsys, tta):
    expected = predict_json(capsys, digits_run.path, digit_pngs, "--top-k", "3", "--tta", tta)
    plain = predict_json(capsys, digits_run.path, digit_pngs, "--top-k", "3")
    files = [("file", (str(path), path.read_bytes(), "image/png")) for path in digit_pngs]
    answer = tta_client.post(f"/predict/{tta}?top_k=3", files=files)
    assert answer.status_code == 200 and answer.json() == expected and expected != plain
    # the fast path (one raw image body) answers the same
    raw = tta_client.post(f"/predict/{tta}", content=digit_pngs[0].read_bytes(), headers={"Content-Type": "image/png"})
    top = raw.json()[0]["top"][:3]  # a batch of one: float rounding of other kernels
    assert [t["label"] for t in top] == [t["label"] for t in expected[0]["top"]]
    np.testing.assert_allclose([t["prob"] for t in top], [t["prob"] for t in expected[0]["top"]], atol=1e-6)
    assert tta_client.post("/predict/digits?top_k=3", files=files).json() == plain  # the untouched model


def test_oip_float_input_is_averaged_over_the_mirror(tta_client, digits_run):
    images = digits_run.test_data().images[:3]
    inputs = digits_run.preprocess.norm.apply(torch.from_numpy(images)).numpy()
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(inputs.shape),
                        "data": inputs.reshape(-1).tolist()}]}
    outputs = {o["name"]: np.asarray(o["data"]).reshape(3, -1)
               for o in tta_client.post("/v2/models/flip/infer", json=body).json()["outputs"]}
    logits = (digits_run.predict_logits(images), digits_run.predict_logits(images[..., ::-1].copy()))
    probs = [digits_run.probabilities(view) for view in logits]
    np.testing.assert_allclose(outputs["probabilities"], (probs[0] + probs[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(outputs["logits"], (logits[0] + logits[1]) / 2, atol=1e-5)


def test_api_models_names_the_tta(tta_client):
    entries = {entry["name"]: entry["tta"] for entry in tta_client.get("/api/models").json()}
    assert entries == {"digits": "none", "flip": "flip", "five-crop": "five-crop"}


@pytest.mark.slow  # a server process (torch's import and the model's load)
def test_a_real_server_with_tta(digits_run, digit_pngs, capsys):
    expected = predict_json(capsys, digits_run.path, digit_pngs[:2], "--tta", "flip")
    with running_server(str(digits_run.path), "--tta", "flip", "--threads", "1", "--no-access-log") as (url, _):
        answers = [httpx.post(f"{url}/predict/{digits_run.path.name}", content=path.read_bytes(),
                              headers={"Content-Type": "image/png"}, timeout=30).json() for path in digit_pngs[:2]]
    for answer, entry in zip(answers, expected):  # one image per request, two in predict's batch: rounding
        assert [t["label"] for t in answer[0]["top"]] == [t["label"] for t in entry["top"]]
        np.testing.assert_allclose([t["prob"] for t in answer[0]["top"]], [t["prob"] for t in entry["top"]],
                                   atol=1e-6)
    plain = predict_json(capsys, digits_run.path, digit_pngs[:2])
    assert np.abs(np.array([t["prob"] for t in answers[0][0]["top"]])
                  - [t["prob"] for t in plain[0]["top"]]).max() > 1e-3  # the server did flip


def test_bad_tta_is_one_line_exit_2(capsys, digits_run):
    assert main(["serve", str(digits_run.path), "--tta", "rotate", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tta must be one of none, flip, five-crop, got 'rotate'" in err


@pytest.mark.slow  # the shapes run shared with test_detection trains for ~20 s
def test_a_detector_refuses_tta(shapes_run):
    from convlab.serve.served import load_served

    with pytest.raises(ConvlabError, match="--tta is for classify and multilabel runs; .* is a detect run"):
        load_served("shapes", shapes_run.path, tta="flip")
