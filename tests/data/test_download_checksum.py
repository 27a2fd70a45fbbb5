"""Offline, with files in the cache that fail their checksum: the message says so and what to do."""
from __future__ import annotations

import hashlib

import pytest

from convlab.data import load_dataset, sources
from convlab.data.download import Resource, fetch_resources
from convlab.errors import ConvlabError


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_a_damaged_cached_file_is_named_with_both_digests(offline, monkeypatch, write_mnist, closed_port_url):
    cache = offline / "mnist"
    write_mnist(cache)  # the four .gz files, whose md5s become the expected ones
    for path in cache.iterdir():
        monkeypatch.setitem(sources.MNIST_MD5, path.name, _md5(path.read_bytes()))
    expected = sources.MNIST_MD5["train-labels-idx1-ubyte.gz"]
    (cache / "train-labels-idx1-ubyte.gz").write_bytes(b"truncated")
    monkeypatch.setenv("CONVLAB_MIRROR", closed_port_url())

    with pytest.raises(ConvlabError) as caught:
        load_dataset("mnist")
    message = str(caught.value)
    assert message.startswith("could not download mnist (")
    assert "\n" not in message
    assert (f"{cache / 'train-labels-idx1-ubyte.gz'} is there but fails its md5 checksum (expected "
            f"{expected[:8]}, found {_md5(b'truncated')[:8]})") in message
    assert "delete it to download it again, or replace it with the original file" in message
    names = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
             "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz")
    assert message.endswith(f", or put {names} in a folder and pass --data-dir FOLDER")
    assert "train-images-idx3-ubyte.gz is there" not in message  # the intact files are not blamed
    assert f"place them in {cache}" not in message  # they are there already
    assert (cache / "train-labels-idx1-ubyte.gz").read_bytes() == b"truncated"  # not deleted behind the user's back


def test_several_damaged_files_are_all_named(offline, tmp_path, closed_port_url):
    dest = tmp_path / "cache"
    dest.mkdir()
    good = Resource("good.bin", _md5(b"good"))
    (dest / "good.bin").write_bytes(b"good")
    bad_a, bad_b = Resource("a.bin", _md5(b"A")), Resource("b.bin", _md5(b"B"))
    (dest / "a.bin").write_bytes(b"not A")
    (dest / "b.bin").write_bytes(b"not B")
    missing = Resource("c.bin", _md5(b"C"))

    with pytest.raises(ConvlabError) as caught:
        fetch_resources("toy", [good, bad_a, bad_b, missing], [closed_port_url()], dest)
    message = str(caught.value)
    assert (f"{dest / 'a.bin'} and {dest / 'b.bin'} are there but fail their md5 checksums (a.bin: expected "
            f"{_md5(b'A')[:8]}, found {_md5(b'not A')[:8]}; b.bin: expected {_md5(b'B')[:8]}, found "
            f"{_md5(b'not B')[:8]})") in message
    assert "delete them to download them again, or replace them with the original files" in message
    assert "good.bin is there" not in message and "c.bin is there" not in message
    assert "\n" not in message


def test_without_damaged_files_the_message_is_as_before(offline, tmp_path, closed_port_url):
    with pytest.raises(ConvlabError) as caught:
        fetch_resources("toy", [Resource("c.bin", _md5(b"C"))], [closed_port_url()], tmp_path / "cache")
    message = str(caught.value)
    assert "checksum" not in message
    assert message.endswith(f"put c.bin in a folder and pass --data-dir FOLDER, or place them in {tmp_path / 'cache'}")
