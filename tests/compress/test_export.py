"""ONNX export: metadata, a free batch size, agreement with PyTorch, and refusal when outputs differ."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from convlab import ConvlabError
from convlab.cli import main
from convlab.compress.export import export_onnx, load_onnx
from convlab.run import Run

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install 'convlab[onnx]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime: pip install 'convlab[onnx]'")


def test_export_writes_metadata_and_a_free_batch_axis(onnx_file, digits_run):
    proto = onnx.load(str(onnx_file))
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    assert json.loads(meta["convlab.labels"]) == digits_run.classes
    preprocess = json.loads(meta["convlab.preprocess"])
    assert preprocess["mean"] == digits_run.preprocess.mean and preprocess["size"] == [8, 8]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value


def test_onnx_predictions_agree_with_the_float_model(onnx_file, digits_run, digits_test, agreement):
    test, _ = digits_test
    exported = load_onnx(onnx_file)
    onnx_probs = exported.predict_arrays(test.images)  # 360 images: batches of 256 and 104
    float_probs = digits_run.predict_arrays(test.images)
    assert agreement(onnx_probs, float_probs) >= 0.99
    np.testing.assert_allclose(onnx_probs, float_probs, atol=1e-5)
    assert exported.evaluate()["accuracy"] == pytest.approx(digits_run.metrics["accuracy"])


class ExportsDifferently(torch.nn.Module):
    """A model whose exported graph differs from its eager one: a stand-in for an exporter bug."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return out + 0.5 if torch.compiler.is_exporting() else out


def test_export_refuses_when_onnxruntime_disagrees_with_pytorch(digits_run, tmp_path):
    wrong = Run(tmp_path, ExportsDifferently(digits_run.model), digits_run.config, digits_run.classes,
                digits_run.preprocess)
    with pytest.raises(ConvlabError, match=r"export refused: .* differ from PyTorch's by up to 0\.5"):
        export_onnx(wrong, tmp_path / "wrong.onnx")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one is left


def test_export_refuses_a_tolerance_the_outputs_do_not_meet(digits_run, tmp_path, capsys):
    code = main(["export", str(digits_run.path), "--out", str(tmp_path / "m.onnx"), "--tolerance", "0"])
    err = capsys.readouterr().err
    if code == 0:  # bit-identical outputs are possible; then the file is there and valid
        assert (tmp_path / "m.onnx").is_file()
    else:
        assert code == 2 and "export refused" in err and "tolerance 0" in err
        assert not (tmp_path / "m.onnx").exists()


def test_predict_accepts_the_onnx_file(onnx_file, digits_run, digits_test, tmp_path, capsys):
    test, classes = digits_test
    image = tmp_path / "digit.png"
    Image.fromarray(test.images[0, 0]).save(image)
    assert main(["predict", str(onnx_file), str(image), "--json", "--top-k", "3"]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    assert main(["predict", str(digits_run.path), str(image), "--json", "--top-k", "3"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert [t["label"] for t in from_onnx[0]["top"]] == [t["label"] for t in from_run[0]["top"]]
    assert from_onnx[0]["top"][0]["prob"] == pytest.approx(from_run[0]["top"][0]["prob"], abs=1e-5)


def test_export_rejects_a_wrong_file_name(capsys, digits_run, tmp_path):
    code = main(["export", str(digits_run.path), "--out", str(tmp_path / "model.txt")])
    assert code == 2 and "must end in .onnx" in capsys.readouterr().err


def test_a_foreign_onnx_file_is_refused_with_advice(tmp_path):
    model = onnx.helper.make_model(onnx.helper.make_graph([], "empty", [], []))
    onnx.save(model, str(tmp_path / "other.onnx"))
    with pytest.raises(ConvlabError, match="no convlab labels/preprocessing"):
        load_onnx(tmp_path / "other.onnx")
