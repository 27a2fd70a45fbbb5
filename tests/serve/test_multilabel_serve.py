"""A multi-label run served by a real `convlab serve` on 127.0.0.1: /predict names the labels above the
thresholds stored in the run's preprocess.json, the OIP probabilities are its sigmoids, and --backend onnx agrees."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from convlab import load_run

from .conftest import running_server

pytestmark = pytest.mark.slow


def squares(run) -> list[Path]:
    """The first generated images of the run's CSV."""
    folder = Path(run.config.data.name.partition(":")[2]).parent
    return sorted(folder.glob("img00*.png"))[:4]


def test_predict_and_oip_answer_with_the_stored_thresholds(multilabel_run, tmp_path):
    folder = shutil.copytree(multilabel_run.path, tmp_path / "squares")
    preprocess = json.loads((folder / "preprocess.json").read_text())
    preprocess["thresholds"] = [0.0, 1.0, 0.0]  # blue and red named for every image, green never
    (folder / "preprocess.json").write_text(json.dumps(preprocess))
    images = squares(multilabel_run)
    run = load_run(folder)
    expected = run.predict(images, top_k=2)
    with running_server(f"squares={folder}", "--no-access-log") as (url, _process):
        files = [("file", (path.name, path.read_bytes(), "image/png")) for path in images]
        answer = httpx.post(f"{url}/predict/squares?top_k=2", files=files, timeout=60)
        assert answer.status_code == 200
        got = answer.json()
        assert [[label["label"] for label in item["labels"]] for item in got] == \
            [[label["label"] for label in item["labels"]] for item in expected]
        assert all(sorted(label["label"] for label in item["labels"]) == ["blue", "red"] for item in got)
        for served, local in zip(got, expected):
            assert [t["label"] for t in served["top"]] == [t["label"] for t in local["top"]]
            np.testing.assert_allclose([t["prob"] for t in served["top"]], [t["prob"] for t in local["top"]],
                                       atol=1e-5)
        [squares_model] = httpx.get(f"{url}/api/models", timeout=30).json()
        assert squares_model["task"] == "multilabel" and squares_model["thresholds"] == [0.0, 1.0, 0.0]
        pixels = run.test_data().images[:2]
        inputs = run.preprocess.norm.apply(torch.from_numpy(pixels)).numpy()
        oip = httpx.post(f"{url}/v2/models/squares/infer", timeout=60, json={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(inputs.shape),
                        "data": inputs.ravel().tolist()}],
            "outputs": [{"name": "probabilities"}]})
        assert oip.status_code == 200
        probabilities = np.array(oip.json()["outputs"][0]["data"]).reshape(2, 3)
        np.testing.assert_allclose(probabilities, run.predict_arrays(pixels), atol=1e-5)
        assert not np.allclose(probabilities.sum(1), 1.0)  # sigmoids, not a softmax


def test_onnx_backend_serves_the_same_labels(multilabel_run, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = shutil.copytree(multilabel_run.path, tmp_path / "squares")
    images = squares(multilabel_run)
    expected = load_run(folder).predict(images)
    with running_server(f"squares={folder}", "--backend", "onnx", "--no-access-log") as (url, _process):
        files = [("file", (path.name, path.read_bytes(), "image/png")) for path in images]
        got = httpx.post(f"{url}/predict/squares", files=files, timeout=60).json()
    assert [[t["label"] for t in item["labels"]] for item in got] == \
        [[t["label"] for t in item["labels"]] for item in expected]
