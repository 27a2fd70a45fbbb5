"""Weight files: the suffixes --weights accepts are the ones the loader reads; save_safetensors."""
from __future__ import annotations

import torch
import pytest

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
