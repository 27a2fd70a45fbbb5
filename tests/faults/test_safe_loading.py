"""Files from strangers never run code: a pickle whose __reduce__ would create a marker file is refused
as a run's weights, as a checkpoint and as a weights file, and the marker never appears."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import pytest
import torch

import convlab
from convlab.errors import ConvlabError
from convlab.models.weights import load_state_dict_file
from convlab.training.checkpoint import CHECKPOINTS, LAST


class _Payload:
    """Unpickling this calls os.system('touch MARKER')."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious(path: Path, marker: Path, as_torch_file: bool) -> Path:
    """A pickle that would create `marker`, as a plain pickle or inside a torch.save zip."""
    payload = {"weight": _Payload(marker)}
    if as_torch_file:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """The control: plain pickle.loads does create the marker, so its absence below means something."""
    marker = tmp_path / "control"
    pickle.loads(_malicious(tmp_path / "x.pkl", marker, as_torch_file=False).read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("as_torch_file", [True, False], ids=["torch.save", "pickle"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors"])
def test_weights_file_with_code_is_refused(tmp_path, as_torch_file, suffix):
    marker = tmp_path / "pwned"
    path = _malicious(tmp_path / f"weights{suffix}", marker, as_torch_file)
    with pytest.raises(ConvlabError, match=re.escape(str(path))) as err:
        load_state_dict_file(path)
    assert "was not loaded: besides tensors it holds" in str(err.value) or "not a valid safetensors" in str(err.value)
    assert not marker.exists()


def test_plain_tensor_files_load(tmp_path):
    model = torch.nn.Linear(3, 2)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, tmp_path / "ckpt.pth")
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    for name in ("w.pt", "ckpt.pth", "w.safetensors"):
        loaded = load_state_dict_file(tmp_path / name)
        assert torch.equal(loaded["weight"], model.weight.detach())
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ConvlabError, match="holds no state dict"):
        load_state_dict_file(tmp_path / "list.pt")


@pytest.mark.parametrize("as_torch_file", [True, False], ids=["torch.save", "pickle"])
def test_malicious_run_weights_are_refused(digits_run_copy, tmp_path, as_torch_file):
    run_dir = digits_run_copy.path
    marker = tmp_path / "pwned"
    _malicious(run_dir / "model.safetensors", marker, as_torch_file)
    with pytest.raises(ConvlabError, match=r"model\.safetensors: cannot read the weights"):
        convlab.load_run(run_dir)
    assert not marker.exists()


@pytest.mark.parametrize("as_torch_file", [True, False], ids=["torch.save", "pickle"])
def test_malicious_checkpoint_is_refused_on_resume(tmp_path, as_torch_file):
    out = tmp_path / "run"
    convlab.train(data="digits", model="tiny-cnn", epochs=1, schedule="none", out=str(out), quiet=True)
    marker = tmp_path / "pwned"
    _malicious(out / CHECKPOINTS / LAST, marker, as_torch_file)
    with pytest.raises(ConvlabError, match=r"last\.safetensors is (damaged|not a readable)"):
        convlab.train(resume=str(out), epochs=2)
    assert not marker.exists()


def test_no_unsafe_torch_load_in_the_package():
    """Every torch.load in convlab passes weights_only=True; nothing else unpickles but CIFAR's allow-list."""
    package = Path(convlab.__file__).parent
    for path in package.rglob("*.py"):
        source = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", source):
            assert "weights_only=True" in call, f"{path}: {call}"
        if path.name != "cifar.py":
            assert not re.search(r"pickle\.(loads?|Unpickler)\(", source), path
