"""Int8 quantization: predictions agree with the float model; the safetensors round trip is exact."""
import json
import struct

import pytest
import torch

from convlab.cli import main
from convlab.compress import load_variant
from convlab.compress.quantize import decode_state, encode_state, quiet_torch_ao


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_predictions_agree_with_the_float_model(quantized_runs, digits_run, digits_test, mode,
                                                     agreement):
    test, _ = digits_test
    float_probs = digits_run.predict_arrays(test.images)
    int8_probs = quantized_runs[mode].predict_arrays(test.images)
    assert agreement(float_probs, int8_probs) >= 0.99


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_loaded_int8_model_gives_the_same_outputs_as_the_one_just_made(quantized_runs, digits_test, mode):
    test, _ = digits_test
    made = quantized_runs[mode]
    loaded = load_variant(made.path)
    assert type(loaded).__name__ == "QuantizedRun"
    assert torch.equal(torch.from_numpy(loaded.predict_arrays(test.images)),
                       torch.from_numpy(made.predict_arrays(test.images)))


def test_static_quantization_makes_int8_convolutions(quantized_runs):
    kinds = {f"{type(module).__module__}.{type(module).__name__}" for module in
             quantized_runs["static"].model.modules()}
    # int8 convolutions (the presets pool before the ReLU, so there is no Conv+ReLU pair to fuse)
    assert "torch.ao.nn.quantized.modules.conv.Conv2d" in kinds, kinds
    assert not any(kind.startswith("torch.nn.modules.conv") for kind in kinds), kinds
    assert "torch.ao.nn.quantized.modules.linear.Linear" in kinds, kinds


def safetensors_header(path):
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + length])


def test_int8_file_is_plain_safetensors_smaller_than_the_float_one(quantized_runs, digits_run):
    for run in quantized_runs.values():
        header = safetensors_header(run.path / "model.int8.safetensors")
        dtypes = {entry["dtype"] for key, entry in header.items() if key != "__metadata__"}
        assert dtypes <= {"I8", "U8", "I32", "I64", "F32", "F64"}
        assert "I8" in dtypes  # the int8 weights themselves
        assert json.loads(header["__metadata__"]["recipe"])["engine"] == torch.backends.quantized.engine
        metrics = json.loads((run.path / "metrics.json").read_text())
        assert metrics["size_mb"] < metrics["before"]["size_mb"]
        assert not (run.path / "model.safetensors").exists()


def test_quantized_tensor_codec_round_trips_exactly():
    with quiet_torch_ao():
        per_tensor = torch.quantize_per_tensor(torch.randn(3, 4), 0.05, 3, torch.quint8)
        per_channel = torch.quantize_per_channel(torch.randn(5, 2), torch.rand(5, dtype=torch.float64) + 0.01,
                                                 torch.zeros(5, dtype=torch.long), 0, torch.qint8)
        state = {"a": per_tensor, "b": (per_channel, None), "c": torch.qint8, "d": torch.ones(2)}
        tensors, layout = encode_state(state)
        back = decode_state(tensors, layout)
    assert all(not t.is_quantized for t in tensors.values())
    assert torch.equal(back["a"].int_repr(), per_tensor.int_repr()) and back["a"].q_scale() == 0.05
    assert back["a"].q_zero_point() == 3 and back["a"].dtype == torch.quint8
    assert torch.equal(back["b"][0].int_repr(), per_channel.int_repr()) and back["b"][1] is None
    assert torch.equal(back["b"][0].q_per_channel_scales(), per_channel.q_per_channel_scales())
    assert back["c"] is torch.qint8 and torch.equal(back["d"], torch.ones(2))


def test_cli_predict_and_eval_read_int8_folders(capsys, quantized_runs, digits_run):
    code = main(["eval", str(quantized_runs["static"].path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["accuracy"] == pytest.approx(quantized_runs["static"].metrics["accuracy"])


def test_quantize_rejects_an_unknown_engine(capsys, digits_run, tmp_path):
    code = main(["compress", "quantize", str(digits_run.path), "--engine", "tpu", "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == 2 and "engine 'tpu' is not available" in err
