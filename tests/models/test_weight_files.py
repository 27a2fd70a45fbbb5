"""Weight files: the suffixes --weights accepts are the ones the loader reads; save_safetensors."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from convlab.errors import ConvlabError
from convlab.models import pretrained, weights
from convlab.models.pretrained import read_weights_file
from convlab.models.weights import WEIGHT_SUFFIXES


def test_one_list_of_suffixes_with_every_kind_the_loader_reads():
    assert set(WEIGHT_SUFFIXES) == {".safetensors", ".pt", ".pth", ".bin", ".ckpt"}
    assert pretrained.WEIGHT_SUFFIXES is WEIGHT_SUFFIXES  # still importable from pretrained, the same tuple


@pytest.mark.parametrize("name", ["pytorch_model.bin", "last.ckpt", "MODEL.BIN"])
def test_torch_files_with_any_loader_suffix_are_accepted(tmp_path, name):
    state = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.ones(2)}
    torch.save(state, tmp_path / name)
    loaded = read_weights_file(tmp_path / name)
    assert sorted(loaded) == ["fc.bias", "fc.weight"]
    assert torch.equal(loaded["fc.weight"], state["fc.weight"]) and torch.equal(loaded["fc.bias"], state["fc.bias"])


def test_an_unknown_suffix_is_refused_listing_exactly_the_suffixes_read(tmp_path):
    torch.save({"fc.weight": torch.ones(1)}, tmp_path / "weights.npz")
    with pytest.raises(ConvlabError) as caught:
        read_weights_file(tmp_path / "weights.npz")
    message = str(caught.value)
    assert message.startswith(f"--weights {tmp_path / 'weights.npz'}: unknown kind of file '.npz'")
    assert message.endswith("convlab reads " + ", ".join(WEIGHT_SUFFIXES))


def test_a_missing_file_names_the_suffixes_read(tmp_path):
    with pytest.raises(ConvlabError) as caught:
        read_weights_file(tmp_path / "missing.bin")
    assert "no such file" in str(caught.value)
    assert all(suffix in str(caught.value) for suffix in WEIGHT_SUFFIXES)


def test_a_bin_file_named_without_a_folder_is_read_as_a_file_by_the_torchvision_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "resnet.bin" has no "/": only its suffix says it is a file, not an enum name
    torch.save({"fc.weight": torch.ones(1)}, tmp_path / "resnet.bin")
    source = pretrained.torchvision_source("resnet18", "resnet.bin")
    assert source.weights == "resnet.bin" and list(source.state) == ["fc.weight"]


# --- save_safetensors ---------------------------------------------------------------------------------

@pytest.fixture
def umask():
    """umask(mask): set the process umask for this test; the old one comes back afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _tensors():
    return {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2),
            "fc.bias": torch.tensor([1, -2, 3], dtype=torch.int8)}


def _assert_equal(loaded, tensors):
    assert sorted(loaded) == sorted(tensors)
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value)


def test_save_safetensors_gives_the_usual_permissions_and_loads_back(tmp_path, umask):
    from safetensors import safe_open
    from safetensors.torch import load_file

    umask(0o022)
    path = tmp_path / "model.safetensors"
    weights.save_safetensors(_tensors(), path, metadata={"format": "pt", "model": "tiny-cnn"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    _assert_equal(load_file(str(path)), _tensors())
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata() == {"format": "pt", "model": "tiny-cnn"}
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left


def test_save_safetensors_follows_a_private_umask(tmp_path, umask):
    from safetensors.torch import load_file

    umask(0o077)
    path = tmp_path / "model.int8.safetensors"
    weights.save_safetensors(_tensors(), str(path))  # a str path as well as a Path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    _assert_equal(load_file(str(path)), _tensors())


def test_save_safetensors_replaces_a_file_and_leaves_it_whole_when_it_fails(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    path = tmp_path / "model.safetensors"
    weights.save_safetensors({"old": torch.zeros(2)}, path)
    weights.save_safetensors(_tensors(), path)
    _assert_equal(load_file(str(path)), _tensors())

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        weights.save_safetensors({"new": torch.ones(3)}, path)
    _assert_equal(load_file(str(path)), _tensors())  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # the temp file removed
