"""Variants of the shared small digits run, made once per session and only read by the tests."""
from __future__ import annotations

import pytest



@pytest.fixture(scope="session")
def digits_test(digits_run):
    """(test split, classes) of the digits run (360 images, labels in the run's class order)."""
    return digits_run.test_data(), digits_run.classes


@pytest.fixture(scope="session")
def variants_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("variants")


@pytest.fixture(scope="session")
def pruned_run(digits_run, variants_dir):
    from convlab.compress import prune_run

    return prune_run(digits_run.path, variants_dir / "pruned", amount=0.5, finetune_epochs=1, quiet=True,
                     latency_seconds=0.01)


@pytest.fixture(scope="session")
def quantized_runs(digits_run, variants_dir):
    from convlab.compress import quantize_run

    return {mode: quantize_run(digits_run.path, variants_dir / f"int8-{mode}", mode=mode, calibration_images=256,
                               latency_seconds=0.01)
            for mode in ("dynamic", "static")}


@pytest.fixture(scope="session")
def onnx_file(digits_run, tmp_path_factory):
    """digits_run exported to its own folder (not into the shared run folder)."""
    pytest.importorskip("onnxruntime", reason="ONNX export is checked with onnxruntime: pip install -e '.[onnx]'")
    pytest.importorskip("onnxscript", reason="torch.onnx's exporter needs onnxscript: pip install -e '.[onnx]'")
    from convlab.compress import export_onnx

    return export_onnx(digits_run, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def agreement():
    """agreement(probs_a, probs_b): share of images on which two probability matrices pick the same class."""
    return lambda a, b: float((a.argmax(1) == b.argmax(1)).mean())
