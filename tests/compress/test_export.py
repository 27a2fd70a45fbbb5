"""ONNX export: metadata, a free batch size, agreement with PyTorch, and refusal when outputs differ."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from convlab import ConvlabError
from convlab.cli import main
from convlab.compress import export
from convlab.compress.export import export_onnx, load_onnx
from convlab.run import Run

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx: pip install -e '.[onnx]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX export needs onnxruntime: pip install -e '.[onnx]'")


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


@pytest.mark.slow
def test_export_refuses_when_onnxruntime_disagrees_with_pytorch(digits_run, tmp_path):
    wrong = Run(tmp_path, ExportsDifferently(digits_run.model), digits_run.config, digits_run.classes,
                digits_run.preprocess)
    with pytest.raises(ConvlabError, match=r"export refused: .* differ from PyTorch's by up to 0\.5"):
        export_onnx(wrong, tmp_path / "wrong.onnx")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one is left


def test_export_refuses_a_tolerance_the_outputs_do_not_meet(digits_run_copy, capsys, monkeypatch):
    """--tolerance is the bar: outputs 1e-3 apart exit 2 at 1e-4 with no file left, and export at 1e-2.

    The real onnxruntime/PyTorch comparison runs, plus 1e-3: the true difference (~1e-7, at times
    exactly 0) is one that no tolerance >= 0 is sure to refuse.
    """
    real = export.max_difference
    monkeypatch.setattr(export, "max_difference", lambda *args: real(*args) + 1e-3)
    run_dir = digits_run_copy.path
    before = sorted(p.name for p in run_dir.iterdir())
    assert main(["export", str(run_dir), "--tolerance", "1e-4"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"convlab export: error: export refused: onnxruntime's outputs differ from PyTorch's by up to 0.001 "
        f"(tolerance 0.0001) on random inputs at batch 1 and 5 and 64 test images of the run; "
        f"{run_dir / 'model.onnx'} was not written")
    assert sorted(p.name for p in run_dir.iterdir()) == before  # neither model.onnx nor model.onnx.partial
    assert main(["export", str(run_dir), "--tolerance", "1e-2"]) == 0  # the default place: RUN_DIR/model.onnx
    assert "max abs difference 0.001 <= 0.01" in capsys.readouterr().out
    assert load_onnx(run_dir / "model.onnx").classes == digits_run_copy.classes


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
