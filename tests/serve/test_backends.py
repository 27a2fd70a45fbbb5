"""--backend onnx: the run exported at start (or a .onnx file given) answers as predict does on that file."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # exports the model (a few seconds)


def test_onnx_backend_and_onnx_file(make_client, digits_run, digit_pngs, capsys, tmp_path):
    from convlab.cli import main
    from convlab.compress.export import export_onnx
    from convlab.serve.served import load_served

    exported = load_served("digits", digits_run.path, backend="onnx")
    assert exported.backend == "onnx" and exported.metrics == digits_run.metrics  # metrics from the run folder
    onnx_file = export_onnx(digits_run, tmp_path / "digits.onnx")
    given = load_served("digits-onnx", onnx_file)  # a .onnx file: onnxruntime whatever --backend says
    assert given.backend == "onnx" and given.labels == digits_run.classes

    capsys.readouterr()
    assert main(["predict", str(onnx_file), *map(str, digit_pngs), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    client = make_client({"digits": exported, "digits-onnx": given})
    files = [("file", (str(path), path.read_bytes(), "image/png")) for path in digit_pngs]
    for name in ("digits", "digits-onnx"):
        answer = client.post(f"/predict/{name}", files=files)
        assert answer.json() == expected, name
    meta = client.get("/v2/models/digits-onnx").json()
    assert meta["platform"] == "onnxruntime_onnx"
